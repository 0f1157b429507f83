//! CSV schema v1 writer (RFC 4180 quoting by the `csv` crate).

use std::io::Write;

use crate::event::IcmpEvent;
use crate::export::{IfNames, Row, HEADER};

#[derive(Debug)]
pub struct CsvExport<W: Write> {
    out: csv::Writer<W>,
    source: &'static str,
    ifnames: IfNames,
}

impl<W: Write> CsvExport<W> {
    /// Writes the header row at once, so even an empty run yields one.
    pub fn new(out: W, source: &'static str) -> csv::Result<Self> {
        let mut out = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        out.write_record(HEADER)?;
        Ok(Self {
            out,
            source,
            ifnames: IfNames::default(),
        })
    }

    pub fn write(&mut self, ev: &IcmpEvent) -> csv::Result<()> {
        let ifname = self.ifnames.get(ev.ifindex);
        self.out.serialize(Row::new(ev, self.source, ifname))
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Direction, Echo, Family, Info, Quoted};
    use std::net::IpAddr;

    fn event() -> IcmpEvent {
        IcmpEvent {
            ts_ns: 1_000_000_001,
            direction: Direction::Out,
            ifindex: 0,
            family: Family::V4,
            src: IpAddr::from([127, 0, 0, 1]),
            dst: IpAddr::from([127, 0, 0, 1]),
            ttl: 64,
            length: 84,
            icmp_type: 3,
            icmp_code: 4,
            echo: None,
            quoted: Some(Quoted {
                proto: 17,
                src: IpAddr::from([10, 0, 0, 1]),
                dst: IpAddr::from([10, 0, 0, 2]),
                sport: Some(5000),
                dport: Some(53),
            }),
            info: Some(Info::Mtu(1400)),
        }
    }

    fn render(events: &[IcmpEvent]) -> String {
        let mut buf = Vec::new();
        {
            let mut csv = CsvExport::new(&mut buf, "kmod").unwrap();
            for ev in events {
                csv.write(ev).unwrap();
            }
            csv.flush().unwrap();
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn header_matches_row_fields() {
        // The explicit header must name Row's fields in Row's order.
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(Row::new(&event(), "kmod", "")).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), HEADER.join(","));
    }

    #[test]
    fn error_row_and_empty_cells() {
        let mut echo = event();
        echo.icmp_type = 8;
        echo.icmp_code = 0;
        echo.quoted = None;
        echo.info = None;
        echo.echo = Some(Echo {
            id: 7,
            seq: 1,
            payload_len: 56,
        });
        let text = render(&[event(), echo]);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            "1970-01-01T00:00:01.000000001Z,kmod,out,,4,127.0.0.1,127.0.0.1,3,4,frag-needed,,,64,84,,17,10.0.0.1,10.0.0.2,5000,53,mtu=1400"
        );
        assert_eq!(
            lines[2],
            "1970-01-01T00:00:01.000000001Z,kmod,out,,4,127.0.0.1,127.0.0.1,8,0,echo-request,7,1,64,84,,,,,,,"
        );
    }

    #[test]
    fn empty_run_still_has_header() {
        assert_eq!(render(&[]), format!("{}\n", HEADER.join(",")));
    }
}

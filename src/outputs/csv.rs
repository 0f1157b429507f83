//! CSV schema v3 writer (RFC 4180 quoting by the `csv` crate).

use std::io::{self, Write};

use super::row::{Row, RowSink, HEADER};

#[derive(Debug)]
pub struct CsvExport<W: Write> {
    out: csv::Writer<W>,
    header_written: bool,
}

fn io_error(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

impl<W: Write> CsvExport<W> {
    /// The header row comes with the first row, or at the end of a run
    /// that went well (so even an empty run yields one); a run that fails
    /// before its first row writes nothing. Not `empty`: the output already
    /// has rows (a file reopened on SIGHUP), and no header.
    pub fn new(out: W, empty: bool) -> Self {
        let out = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        Self {
            out,
            header_written: !empty,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.out.write_record(HEADER).map_err(io_error)?;
            self.header_written = true;
        }
        Ok(())
    }
}

impl<W: Write + Send> RowSink for CsvExport<W> {
    fn write_row(&mut self, row: &Row) -> io::Result<()> {
        self.header()?;
        self.out.serialize(row).map_err(io_error)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.header()?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::row::tests::{echo_event, error_event};
    use icmpmon_core::aggregate::{Attribution, Owner};

    fn render(rows: &[Row]) -> String {
        let mut buf = Vec::new();
        {
            let mut csv = CsvExport::new(&mut buf, true);
            for row in rows {
                csv.write_row(row).unwrap();
            }
            csv.finish().unwrap();
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn header_matches_row_fields() {
        // The explicit header must name Row's fields in Row's order.
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(Row::new(&error_event(), "kmod", None, None, None))
            .unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), HEADER.join(","));
    }

    #[test]
    fn error_row_and_empty_cells() {
        let (err, echo) = (error_event(), echo_event());
        let mut dropped = echo_event();
        dropped.direction = icmpmon_core::event::Direction::Drop;
        dropped.drop = Some(icmpmon_core::event::KernelDrop {
            reason: "NETFILTER_DROP".into(),
            function: "nft_do_chain".into(),
        });
        let owner = Attribution::Owner(std::sync::Arc::new(Owner {
            pid: 4242,
            comm: "nginx".into(),
            uid: 33,
            cgroup: "/system.slice/nginx.service".into(),
        }));
        let text = render(&[
            Row::new(&err, "kmod", None, None, Some(&owner)),
            Row::new(
                &echo,
                "kmod",
                Some("lo"),
                Some(1234),
                Some(&Attribution::Gone),
            ),
            Row::new(&dropped, "bpf", Some("lo"), None, None),
        ]);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[1],
            "1970-01-01T00:00:01.000000001Z,kmod,out,,4,127.0.0.1,127.0.0.1,3,4,frag-needed,,,64,84,,17,10.0.0.1,10.0.0.2,5000,53,mtu=1400,4242,nginx,/system.slice/nginx.service,"
        );
        assert_eq!(
            lines[2],
            "1970-01-01T00:00:01.000000001Z,kmod,out,lo,4,127.0.0.1,127.0.0.1,8,0,echo-request,7,1,64,84,1234,,,,,,,,,,"
        );
        // Schema v3: a drop row names the function in info, then the reason.
        assert_eq!(
            lines[3],
            "1970-01-01T00:00:01.000000001Z,bpf,drop,lo,4,127.0.0.1,127.0.0.1,8,0,echo-request,7,1,64,84,,,,,,,nft_do_chain,,,,NETFILTER_DROP"
        );
    }

    #[test]
    fn empty_run_still_has_header() {
        assert_eq!(render(&[]), format!("{}\n", HEADER.join(",")));
    }
}

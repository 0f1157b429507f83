//! CSV schema v3 writer: RFC 4180, a field quoted only when it holds a
//! comma, a quote or a line break (what the `csv` crate does by default,
//! which the tests read the rows back with).

use std::io::{self, Write};

use super::cells::{CellWriter, Lines};
use super::row::{Cell, CellFormat, Row, RowSink, HEADER};

#[derive(Debug)]
pub struct CsvExport<W: Write> {
    lines: Lines<W>,
    header_written: bool,
    cells: CellWriter,
}

impl<W: Write> CsvExport<W> {
    /// The header row comes with the first row, or at the end of a run
    /// that went well (so even an empty run yields one); a run that fails
    /// before its first row writes nothing. Not `empty`: the output already
    /// has rows (a file reopened on SIGHUP), and no header.
    pub fn new(out: W, empty: bool) -> Self {
        Self {
            lines: Lines::new(out),
            header_written: !empty,
            cells: CellWriter::default(),
        }
    }

    fn header(&mut self) {
        if !self.header_written {
            let buf = &mut self.lines.buf;
            buf.extend_from_slice(HEADER.join(",").as_bytes());
            buf.push(b'\n');
            self.header_written = true;
        }
    }
}

/// `s` as a CSV field: as is, or quoted with its quotes doubled.
fn text(s: &str, out: &mut Vec<u8>) {
    let b = s.as_bytes();
    if !b.iter().any(|&c| matches!(c, b',' | b'"' | b'\n' | b'\r')) {
        out.extend_from_slice(b);
        return;
    }
    out.push(b'"');
    for part in b.split_inclusive(|&c| c == b'"') {
        out.extend_from_slice(part);
        if part.last() == Some(&b'"') {
            out.push(b'"');
        }
    }
    out.push(b'"');
}

impl<W: Write> CellFormat for CsvExport<W> {
    #[inline(always)]
    fn cell(&mut self, _name: &'static str, cell: Cell<'_>) {
        let buf = &mut self.lines.buf;
        match cell {
            Cell::Text(s) => text(s, buf),
            other => self.cells.plain(other, buf),
        }
        buf.push(b',');
    }
}

impl<W: Write + Send> RowSink for CsvExport<W> {
    fn write_row(&mut self, row: &Row) -> io::Result<()> {
        self.header();
        row.write_cells(self);
        // Each cell ends with a comma: the last one ends the line.
        if let Some(last) = self.lines.buf.last_mut() {
            *last = b'\n';
        }
        self.lines.row_done()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lines.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.header();
        self.lines.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::row::tests::{arb_row_parts, echo_event, error_event, expected_cells};
    use icmpmon_core::aggregate::{Attribution, Owner};
    use proptest::prelude::*;

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
        assert_eq!(lines[0], HEADER.join(","));
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

    proptest! {
        /// Any row, with any text in its strings (commas, quotes, line
        /// breaks, non-ASCII), reads back with the `csv` crate as the
        /// fields it holds.
        #[test]
        fn rows_read_back_as_their_fields(parts in arb_row_parts()) {
            let (ev, who, ifname, rtt) = parts.build();
            let row = Row::new(&ev, "pcap", ifname.as_deref(), rtt, who.as_ref());
            let text = render(std::slice::from_ref(&row));
            let mut r = ::csv::ReaderBuilder::new().from_reader(text.as_bytes());
            let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
            prop_assert_eq!(header, HEADER.to_vec());
            let records: Vec<_> = r.records().map(Result::unwrap).collect();
            prop_assert_eq!(records.len(), 1);
            let got: Vec<&str> = records[0].iter().collect();
            prop_assert_eq!(got, expected_cells(&row));
        }
    }
}

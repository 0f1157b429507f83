//! JSON lines: one object per ICMP message, with the CSV's field names;
//! an empty cell is `null`, numbers are numbers, the rest strings.

use std::io::{self, Write};

use super::cells::{CellWriter, Lines};
use super::row::{Cell, CellFormat, Row, RowSink};

#[derive(Debug)]
pub struct JsonlExport<W: Write> {
    lines: Lines<W>,
    cells: CellWriter,
}

impl<W: Write> JsonlExport<W> {
    pub fn new(out: W) -> Self {
        Self {
            lines: Lines::new(out),
            cells: CellWriter::default(),
        }
    }
}

/// `s` as a JSON string (RFC 8259: quote, backslash and control
/// characters escaped, as serde_json does).
fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0;
    for (i, &c) in s.as_bytes().iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
    out.push(b'"');
}

impl<W: Write> CellFormat for JsonlExport<W> {
    #[inline(always)]
    fn cell(&mut self, name: &'static str, cell: Cell<'_>) {
        let line = &mut self.lines.buf;
        line.push(b'"');
        line.extend_from_slice(name.as_bytes());
        line.extend_from_slice(b"\":");
        match cell {
            Cell::Empty => line.extend_from_slice(b"null"),
            Cell::Text(s) => string(s, line),
            Cell::Uint(_) => self.cells.plain(cell, line),
            // Addresses, times, info and words hold nothing to escape.
            Cell::Ip(_) | Cell::Time(_) | Cell::Info(_) | Cell::Word(_) => {
                line.push(b'"');
                self.cells.plain(cell, line);
                line.push(b'"');
            }
        }
        line.push(b',');
    }
}

impl<W: Write + Send> RowSink for JsonlExport<W> {
    fn write_row(&mut self, row: &Row) -> io::Result<()> {
        self.lines.buf.push(b'{');
        row.write_cells(self);
        // Each cell ends with a comma: the last one ends the object.
        let buf = &mut self.lines.buf;
        if let Some(last) = buf.last_mut() {
            *last = b'}';
        }
        buf.push(b'\n');
        self.lines.row_done()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lines.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::row::tests::{arb_row_parts, error_event, expected_cells};
    use crate::outputs::row::HEADER;
    use proptest::prelude::*;

    fn render(row: &Row) -> serde_json::Map<String, serde_json::Value> {
        let mut buf = Vec::new();
        {
            let mut out = JsonlExport::new(&mut buf);
            out.write_row(row).unwrap();
            out.flush().unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        v.as_object().unwrap().clone()
    }

    #[test]
    fn same_fields_as_csv_with_nulls_for_empty_cells() {
        let ev = error_event();
        let obj = render(&Row::new(&ev, "pcap", None, None, None));
        let keys: Vec<_> = obj.keys().map(String::as_str).collect();
        let mut header = HEADER.to_vec();
        header.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, header);
        assert_eq!(obj["timestamp"], "1970-01-01T00:00:01.000000001Z");
        assert_eq!(obj["kind"], "frag-needed");
        assert_eq!(obj["family"], 4);
        assert_eq!(obj["src"], "127.0.0.1");
        assert_eq!(obj["inner_dport"], 53);
        assert_eq!(obj["id"], serde_json::Value::Null);
        assert_eq!(obj["ifname"], serde_json::Value::Null);
        assert_eq!(obj["info"], "mtu=1400");
    }

    proptest! {
        /// Any row, with any text in its strings, parses as JSON holding
        /// the CSV's fields: numbers as numbers, empty cells as null.
        #[test]
        fn rows_parse_as_their_fields(parts in arb_row_parts()) {
            let (ev, who, ifname, rtt) = parts.build();
            let row = Row::new(&ev, "pcap", ifname.as_deref(), rtt, who.as_ref());
            let obj = render(&row);
            let numbers = ["family", "icmp_type", "icmp_code", "id", "seq", "ttl", "length",
                "rtt_us", "inner_proto", "inner_sport", "inner_dport", "pid"];
            for (name, want) in HEADER.iter().zip(expected_cells(&row)) {
                let v = &obj[*name];
                match v {
                    serde_json::Value::Null => prop_assert_eq!(want, "", "{}", name),
                    serde_json::Value::Number(n) => {
                        prop_assert!(numbers.contains(name), "{} is a number", name);
                        prop_assert_eq!(n.to_string(), want, "{}", name);
                    }
                    serde_json::Value::String(s) => {
                        prop_assert!(!numbers.contains(name), "{} is a string", name);
                        prop_assert_eq!(s.as_str(), want, "{}", name);
                    }
                    other => prop_assert!(false, "{name}: {other}"),
                }
            }
        }
    }
}

//! JSON lines: one object per ICMP message, with the CSV's field names.

use std::io::{self, Write};

use super::row::{Row, RowSink};

#[derive(Debug)]
pub struct JsonlExport<W: Write> {
    out: W,
}

impl<W: Write> JsonlExport<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write + Send> RowSink for JsonlExport<W> {
    fn write_row(&mut self, row: &Row) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, row)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::row::tests::error_event;
    use crate::outputs::row::HEADER;

    #[test]
    fn same_fields_as_csv_with_nulls_for_empty_cells() {
        let mut buf = Vec::new();
        let mut out = JsonlExport::new(&mut buf);
        out.write_row(&Row::new(&error_event(), "pcap", None, None, None))
            .unwrap();
        out.flush().unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let obj = v.as_object().unwrap();
        let keys: Vec<_> = obj.keys().map(String::as_str).collect();
        let mut header = HEADER.to_vec();
        header.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, header);
        assert_eq!(obj["kind"], "frag-needed");
        assert_eq!(obj["inner_dport"], 53);
        assert_eq!(obj["id"], serde_json::Value::Null);
        assert_eq!(obj["ifname"], serde_json::Value::Null);
        assert_eq!(obj["info"], "mtu=1400");
    }
}

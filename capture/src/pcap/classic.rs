//! The classic pcap format, read as libpcap reads it (its `sf-pcap.c`), so
//! that icmpmon reads whatever tcpdump reads and refuses only what it
//! refuses: a record's original length above the file's snap length is
//! what every truncated capture has (`tcpdump -s 64`); a record longer than
//! the snap length is cut to it (libpcap does the same); only a record
//! longer than libpcap's own maximum is damage. Both byte orders, µs and ns
//! magics, the pre-2.3 swapped length fields and the 24-byte record
//! headers of the "Kuznetzov" patched libpcap.

/// pcap magic numbers as read in little-endian order.
const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const MAGIC_KUZNETZOV: u32 = 0xa1b2_cd34;
/// libpcap's largest packet for most link types (`MAXIMUM_SNAPLEN`).
const MAXIMUM_SNAPLEN: u32 = 262_144;
/// The file header's length.
pub(super) const FILE_HEADER: usize = 24;

/// Whether the caplen and len fields of records are in the pre-2.3 order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lengths {
    InOrder,
    Swapped,
    /// Version 2.3 files were written both ways: swapped when caplen > len.
    Maybe,
}

/// What a file header says about its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Format {
    big_endian: bool,
    nanos: bool,
    lengths: Lengths,
    /// Record header length: 16, or 24 for the patched libpcap.
    record_header: usize,
    /// The snap length as libpcap adjusts it (0 or too large: the maximum).
    pub(super) snaplen: u32,
    /// The link type, without its FCS bits.
    pub(super) linktype: u32,
}

/// One record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) ts_ns: u64,
    /// Bytes of packet data in the file after the header.
    pub(super) caplen: u32,
    /// Of them, the bytes kept (at most the snap length).
    pub(super) kept: u32,
    /// The packet's length on the wire.
    pub(super) orig_len: u32,
    /// Header plus data: what the record takes in the file.
    pub(super) total: usize,
}

/// libpcap's `max_snaplen_for_dlt`.
fn max_snaplen(linktype: u32) -> u32 {
    match linktype {
        231 => 128 * 1024 * 1024, // DBUS
        279 => 8 * 1024 * 1024,   // EBHSCR
        249 => 1024 * 1024,       // USBPCAP
        _ => MAXIMUM_SNAPLEN,
    }
}

impl Format {
    /// Reads a file header; `Ok(None)`: not a classic pcap magic.
    pub(super) fn parse(b: &[u8; FILE_HEADER]) -> Result<Option<Self>, String> {
        let le = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let (big_endian, magic) = if [MAGIC_US, MAGIC_NS, MAGIC_KUZNETZOV].contains(&le) {
            (false, le)
        } else if [MAGIC_US, MAGIC_NS, MAGIC_KUZNETZOV].contains(&le.swap_bytes()) {
            (true, le.swap_bytes())
        } else {
            return Ok(None);
        };
        let u16_at = |at: usize| {
            let v = [b[at], b[at + 1]];
            if big_endian {
                u16::from_be_bytes(v)
            } else {
                u16::from_le_bytes(v)
            }
        };
        let u32_at = |at: usize| read_u32(b, at, big_endian);
        let (major, minor) = (u16_at(4), u16_at(6));
        if major < 2 {
            return Err("archaic pcap savefile format".into());
        }
        let lengths = match (major, minor) {
            (2, 0..=2) | (543, 0) => Lengths::Swapped,
            (2, 3) => Lengths::Maybe,
            (2, 4) => Lengths::InOrder,
            _ => return Err(format!("unsupported pcap savefile version {major}.{minor}")),
        };
        let linktype = u32_at(20) & 0x03ff_ffff;
        let max = max_snaplen(linktype);
        let mut snaplen = match u32_at(16) {
            0 => max,
            s if s > max => max,
            s => s,
        };
        let record_header = if magic == MAGIC_KUZNETZOV {
            // Captured in cooked mode, a faked Ethernet header was added.
            if linktype == 1 {
                snaplen = snaplen.saturating_add(14);
            }
            24
        } else {
            16
        };
        Ok(Some(Self {
            big_endian,
            nanos: magic == MAGIC_NS,
            lengths,
            record_header,
            snaplen,
            linktype,
        }))
    }

    /// Reads a record header from the start of `b`; `Ok(None)`: `b` holds
    /// less than a record header. An error is damage libpcap refuses too.
    pub(super) fn record(&self, b: &[u8]) -> Result<Option<Record>, String> {
        if b.len() < self.record_header {
            return Ok(None);
        }
        let sec = u64::from(read_u32(b, 0, self.big_endian));
        let frac = u64::from(read_u32(b, 4, self.big_endian));
        let (mut caplen, mut len) = (
            read_u32(b, 8, self.big_endian),
            read_u32(b, 12, self.big_endian),
        );
        if self.lengths == Lengths::Swapped || (self.lengths == Lengths::Maybe && caplen > len) {
            std::mem::swap(&mut caplen, &mut len);
        }
        let max = max_snaplen(self.linktype);
        if caplen > max {
            return Err(if caplen > self.snaplen {
                format!(
                    "invalid packet capture length {caplen}, bigger than snaplen of {}",
                    self.snaplen
                )
            } else {
                format!("invalid packet capture length {caplen}, bigger than maximum of {max}")
            });
        }
        let ns_per_frac = if self.nanos { 1 } else { 1_000 };
        Ok(Some(Record {
            ts_ns: sec
                .saturating_mul(1_000_000_000)
                .saturating_add(frac.saturating_mul(ns_per_frac)),
            caplen,
            kept: caplen.min(self.snaplen),
            orig_len: len,
            total: self.record_header + caplen as usize,
        }))
    }

    /// Bytes from a record's start to its packet data.
    pub(super) fn data_offset(&self) -> usize {
        self.record_header
    }
}

fn read_u32(b: &[u8], at: usize, big_endian: bool) -> u32 {
    let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if big_endian {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: u32, version: (u16, u16), snaplen: u32, linktype: u32) -> [u8; 24] {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&magic.to_le_bytes());
        h[4..6].copy_from_slice(&version.0.to_le_bytes());
        h[6..8].copy_from_slice(&version.1.to_le_bytes());
        h[16..20].copy_from_slice(&snaplen.to_le_bytes());
        h[20..24].copy_from_slice(&linktype.to_le_bytes());
        h
    }

    fn record(sec: u32, frac: u32, caplen: u32, len: u32) -> Vec<u8> {
        [sec, frac, caplen, len]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    #[test]
    fn a_truncated_capture_is_read_as_tcpdump_reads_it() {
        // tcpdump -s 64 of a 228-byte ping: orig_len above the snap length.
        let f = Format::parse(&header(MAGIC_US, (2, 4), 64, 1))
            .unwrap()
            .unwrap();
        let r = f.record(&record(1, 5, 64, 242)).unwrap().unwrap();
        assert_eq!((r.caplen, r.kept, r.orig_len), (64, 64, 242));
        assert_eq!(r.ts_ns, 1_000_005_000);
        assert_eq!(r.total, 16 + 64);
        // A record longer than the header's snap length, within libpcap's
        // maximum: read, and cut to the snap length.
        let r = f.record(&record(1, 0, 1500, 1500)).unwrap().unwrap();
        assert_eq!((r.caplen, r.kept), (1500, 64));
        // Longer than libpcap's maximum: damage, in libpcap's words.
        let e = f.record(&record(1, 0, 1 << 31, 1 << 31)).unwrap_err();
        assert!(
            e.contains("invalid packet capture length 2147483648"),
            "{e}"
        );
        // Less than a header: more bytes needed.
        assert_eq!(f.record(&[0; 15]).unwrap(), None);
    }

    #[test]
    fn headers_as_libpcap_takes_them() {
        // Snap length 0 or huge: the maximum for the link type.
        let f = Format::parse(&header(MAGIC_NS, (2, 4), 0, 1))
            .unwrap()
            .unwrap();
        assert_eq!(f.snaplen, MAXIMUM_SNAPLEN);
        let r = f.record(&record(2, 7, 10, 10)).unwrap().unwrap();
        assert_eq!(r.ts_ns, 2_000_000_007);
        // Big-endian, FCS bits in the link type.
        let mut be = [0u8; 24];
        be[0..4].copy_from_slice(&MAGIC_US.to_be_bytes());
        be[4..6].copy_from_slice(&2u16.to_be_bytes());
        be[6..8].copy_from_slice(&4u16.to_be_bytes());
        be[16..20].copy_from_slice(&96u32.to_be_bytes());
        be[20..24].copy_from_slice(&(0x1000_0001u32).to_be_bytes());
        let f = Format::parse(&be).unwrap().unwrap();
        assert_eq!((f.snaplen, f.linktype), (96, 1));
        // Versions: archaic, unsupported, and the swapped-length ones.
        assert!(Format::parse(&header(MAGIC_US, (1, 0), 96, 1)).is_err());
        assert!(Format::parse(&header(MAGIC_US, (2, 5), 96, 1)).is_err());
        let old = Format::parse(&header(MAGIC_US, (2, 2), 96, 1))
            .unwrap()
            .unwrap();
        let r = old.record(&record(0, 0, 100, 60)).unwrap().unwrap();
        assert_eq!((r.caplen, r.orig_len), (60, 100));
        let maybe = Format::parse(&header(MAGIC_US, (2, 3), 96, 1))
            .unwrap()
            .unwrap();
        let r = maybe.record(&record(0, 0, 60, 100)).unwrap().unwrap();
        assert_eq!((r.caplen, r.orig_len), (60, 100));
        // The patched libpcap's 24-byte record headers.
        let k = Format::parse(&header(MAGIC_KUZNETZOV, (2, 4), 96, 1))
            .unwrap()
            .unwrap();
        assert_eq!((k.data_offset(), k.snaplen), (24, 110));
        // Not a pcap magic at all.
        assert_eq!(Format::parse(&[0; 24]).unwrap(), None);
    }
}

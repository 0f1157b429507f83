//! pcapng blocks read from their fixed fields alone, for blocks whose
//! options `pcap-file` refuses (a name that is not UTF-8, an option it does
//! not like) while libpcap reads them: libpcap checks options' lengths, not
//! their text. A block whose fixed part is damaged stays damage.

use pcap_file::Endianness;

/// What a block says without its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Plain<'a> {
    /// An interface description: its link type and, if given, its time
    /// resolution (`if_tsresol`).
    Interface { linktype: u16, tsresol: Option<u8> },
    /// An enhanced packet block.
    Packet {
        interface: u32,
        /// Timestamp units (the interface's resolution).
        units: u64,
        orig_len: u32,
        data: &'a [u8],
    },
    /// A simple packet block.
    Simple { orig_len: u32, data: &'a [u8] },
    /// Anything else: skipped, as libpcap skips blocks it does not use.
    Other,
}

/// Reads the block at the start of `b` (all `len` bytes of it there).
pub(super) fn read(b: &[u8], len: usize, endianness: Endianness) -> Option<Plain<'_>> {
    let block = b.get(..len)?;
    let u32_at = |at: usize| -> Option<u32> {
        let w: [u8; 4] = block.get(at..at + 4)?.try_into().ok()?;
        Some(match endianness {
            Endianness::Big => u32::from_be_bytes(w),
            Endianness::Little => u32::from_le_bytes(w),
        })
    };
    // The body lies between the 8-byte head and the 4-byte trailing length.
    let body_end = len.checked_sub(4)?;
    let data = |at: usize, caplen: u32| {
        let end = at.checked_add(caplen as usize)?;
        (end <= body_end).then(|| &block[at..end])
    };
    Some(match u32_at(0)? {
        1 if len >= 20 => {
            let u16_at = |at: usize| -> Option<u16> {
                let w: [u8; 2] = block.get(at..at + 2)?.try_into().ok()?;
                Some(match endianness {
                    Endianness::Big => u16::from_be_bytes(w),
                    Endianness::Little => u16::from_le_bytes(w),
                })
            };
            // Options after the fixed part: code, length, value padded to
            // 4 bytes; only if_tsresol (9) matters here.
            let mut tsresol = None;
            let mut at = 16;
            while at + 4 <= body_end {
                let (code, n) = (u16_at(at)?, usize::from(u16_at(at + 2)?));
                if code == 0 {
                    break;
                }
                if code == 9 && n == 1 {
                    tsresol = block.get(at + 4).copied();
                }
                at += 4 + n.div_ceil(4) * 4;
            }
            Plain::Interface {
                linktype: u16_at(8)?,
                tsresol,
            }
        }
        // Too short for an interface's fixed part; a section header refused
        // (its byte order and interfaces unknown): what follows cannot be
        // read.
        1 | 0x0a0d_0d0a => return None,
        6 => {
            let caplen = u32_at(20)?;
            Plain::Packet {
                interface: u32_at(8)?,
                units: (u64::from(u32_at(12)?) << 32) | u64::from(u32_at(16)?),
                orig_len: u32_at(24)?,
                data: data(28, caplen)?,
            }
        }
        3 => {
            let orig_len = u32_at(8)?;
            let caplen = orig_len.min(u32::try_from(body_end.checked_sub(12)?).ok()?);
            Plain::Simple {
                orig_len,
                data: data(12, caplen)?,
            }
        }
        _ => Plain::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + body.len()) as u32;
        [
            &kind.to_le_bytes()[..],
            &len.to_le_bytes(),
            body,
            &len.to_le_bytes(),
        ]
        .concat()
    }

    #[test]
    fn fixed_fields_without_options() {
        // An interface description with a non-UTF-8 name option, then
        // if_tsresol 9.
        let idb = block(
            1,
            &[
                1, 0, 0, 0, 0, 0, 4, 0, 2, 0, 2, 0, 0xff, 0xfe, 0, 0, 9, 0, 1, 0, 9, 0, 0, 0,
            ],
        );
        assert_eq!(
            read(&idb, idb.len(), Endianness::Little),
            Some(Plain::Interface {
                linktype: 1,
                tsresol: Some(9)
            })
        );
        // Too short for its fixed part; a refused section header.
        assert_eq!(read(&block(1, &[1, 0]), 14, Endianness::Little), None);
        assert_eq!(
            read(&block(0x0a0d_0d0a, &[0; 16]), 28, Endianness::Little),
            None
        );
        let mut body = Vec::new();
        for v in [0u32, 1, 2, 3, 60] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&[9, 9, 9, 0]);
        let epb = block(6, &body);
        assert_eq!(
            read(&epb, epb.len(), Endianness::Little),
            Some(Plain::Packet {
                interface: 0,
                units: (1 << 32) | 2,
                orig_len: 60,
                data: &[9, 9, 9],
            })
        );
        // A captured length past the block: damage, not a read.
        let mut bad = body.clone();
        bad[12..16].copy_from_slice(&100u32.to_le_bytes());
        let bad = block(6, &bad);
        assert_eq!(read(&bad, bad.len(), Endianness::Little), None);
        assert_eq!(
            read(&block(5, &[0; 8]), 20, Endianness::Little),
            Some(Plain::Other)
        );
    }
}

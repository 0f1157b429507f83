//! The capture-file source: pcap and pcapng (crate `pcap-file`), read
//! without privileges. Link layers are stripped here so that the one parser
//! sees packets from their IP header on, as from every other source.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, PcapError};

use crate::pipeline::{PacketSink, StopFlag};
use crate::SourceEnd;
use icmpmon_core::event::{Direction, RawPacket};

/// Packets handed on per batch.
const BATCH: usize = 512;
/// Longest sleep between two looks at the stop flag while replaying.
const SLICE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum PcapFileError {
    #[error("cannot read {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a pcap or pcapng file (it starts with {magic})")]
    NotCapture { path: PathBuf, magic: String },
    #[error("{path} is damaged at byte {offset}: {reason}")]
    Damaged {
        path: PathBuf,
        offset: usize,
        reason: String,
    },
}

/// What reading the file saw; shared with the summary.
#[derive(Debug, Default)]
pub struct PcapCounters {
    pub frames: AtomicU64,
    /// Frames whose link layer carries no IPv4/IPv6 (ARP, LLDP, …).
    pub not_ip: AtomicU64,
    /// Frames of a link type icmpmon does not decode.
    pub unknown_link: AtomicU64,
}

/// One interface of the file: how to strip its frames, how to read times.
#[derive(Debug, Clone, Copy)]
struct Interface {
    link: DataLink,
    /// Nanoseconds per timestamp unit (pcapng if_tsresol; pcap: 1).
    ns_per_unit: u64,
    /// For binary resolutions (2^-n s): n, else None.
    binary_exp: Option<u8>,
}

impl Interface {
    fn timestamp_ns(&self, units: u128) -> u64 {
        let ns = match self.binary_exp {
            Some(n) => units.saturating_mul(1_000_000_000) >> n,
            None => units.saturating_mul(u128::from(self.ns_per_unit)),
        };
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

/// if_tsresol: bit 7 clear = 10^-n s, set = 2^-n s; default 10^-6.
fn interface_from_idb(link: DataLink, tsresol: Option<u8>) -> Interface {
    match tsresol {
        Some(r) if r & 0x80 != 0 => Interface {
            link,
            ns_per_unit: 0,
            binary_exp: Some(r & 0x7f),
        },
        Some(r) => Interface {
            link,
            // Finer than 1 ns rounds down to 1 ns units.
            ns_per_unit: 10u64.pow(9u32.saturating_sub(u32::from(r))),
            binary_exp: None,
        },
        None => Interface {
            link,
            ns_per_unit: 1_000,
            binary_exp: None,
        },
    }
}

/// Ethertypes of IPv4, IPv6 and VLAN tags (802.1Q, 802.1ad, old QinQ).
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const VLAN_TAGS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Linux cooked capture packet types: 4 is "sent by us".
fn sll_direction(pkttype: u16) -> Direction {
    if pkttype == 4 {
        Direction::Out
    } else {
        Direction::In
    }
}

/// Where the IP packet starts in a frame, and the direction if the link
/// layer records it. `None` when the frame does not carry IPv4/IPv6.
fn strip_link(link: DataLink, frame: &[u8]) -> Result<(usize, Direction), Skip> {
    let ip_at = |ethertype: Option<u16>, at: usize, dir| match ethertype {
        Some(ETH_P_IP | ETH_P_IPV6) => Ok((at, dir)),
        _ => Err(Skip::NotIp),
    };
    match link {
        DataLink::ETHERNET => {
            let mut at = 12;
            let mut ethertype = be16(frame, at);
            while ethertype.is_some_and(|t| VLAN_TAGS.contains(&t)) {
                at += 4;
                ethertype = be16(frame, at);
            }
            ip_at(ethertype, at + 2, Direction::Unknown)
        }
        DataLink::LINUX_SLL => ip_at(
            be16(frame, 14),
            16,
            be16(frame, 0).map_or(Direction::Unknown, sll_direction),
        ),
        DataLink::LINUX_SLL2 => ip_at(
            be16(frame, 0),
            20,
            frame
                .get(10)
                .map_or(Direction::Unknown, |t| sll_direction(u16::from(*t))),
        ),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Ok((0, Direction::Unknown)),
        DataLink::NULL | DataLink::LOOP => {
            // A 4-byte address family, in the capturing host's byte order
            // (NULL) or network order (LOOP): accept IPv4/IPv6 values of
            // Linux and the BSDs in either.
            let af = frame.get(..4).ok_or(Skip::NotIp)?;
            let af = [af[0], af[1], af[2], af[3]];
            let ip = |v: u32| matches!(v, 2 | 10 | 24 | 28 | 30);
            if ip(u32::from_le_bytes(af)) || ip(u32::from_be_bytes(af)) {
                Ok((4, Direction::Unknown))
            } else {
                Err(Skip::NotIp)
            }
        }
        _ => Err(Skip::UnknownLink),
    }
}

enum Skip {
    NotIp,
    UnknownLink,
}

/// A capture's bytes: the file mapped into memory (pages come and go as
/// the kernel sees fit, so a multi-GB file costs no heap), or read whole
/// when it cannot be mapped (a pipe) or for tests.
#[derive(Debug)]
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl Bytes {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() > 0 {
            // SAFETY: a read-only private mapping; the slice parsers only
            // read it. (Another process truncating the file while we read
            // would raise SIGBUS: the known cost of mapping files.)
            if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
                let _ = map.advise(memmap2::Advice::Sequential);
                return Ok(Bytes::Mapped(map));
            }
        }
        // Empty, or not mappable (a pipe, /dev/stdin): read it.
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut data)?;
        Ok(Bytes::Owned(data))
    }
}

/// An opened capture file, ready to be read.
#[derive(Debug)]
pub struct PcapSource {
    path: PathBuf,
    data: Bytes,
    counters: Arc<PcapCounters>,
    /// Replay at the recorded pace times this factor (`--replay`).
    speed: Option<f64>,
}

impl PcapSource {
    pub fn open(path: &Path) -> Result<Self, PcapFileError> {
        let data = Bytes::open(path).map_err(|source| PcapFileError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::checked(path, data)
    }

    /// A capture already in memory; `path` only names it in messages.
    pub fn from_bytes(path: &Path, data: Vec<u8>) -> Result<Self, PcapFileError> {
        Self::checked(path, Bytes::Owned(data))
    }

    /// Refuses what is not a capture file, by its magic number.
    fn checked(path: &Path, data: Bytes) -> Result<Self, PcapFileError> {
        let magic = data
            .get(..4)
            .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        let known = [
            0xa1b2_c3d4,
            0xd4c3_b2a1,
            0xa1b2_3c4d,
            0x4d3c_b2a1,
            0x0a0d_0d0a,
        ];
        if !magic.is_some_and(|m| known.contains(&m) || known.contains(&m.swap_bytes())) {
            return Err(PcapFileError::NotCapture {
                path: path.to_owned(),
                magic: data.iter().take(4).map(|b| format!("{b:02x}")).collect(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            data,
            counters: Arc::default(),
            speed: None,
        })
    }

    /// Hands packets on at their recorded pace, `speed` times faster.
    pub fn with_replay(mut self, speed: f64) -> Self {
        self.speed = Some(speed);
        self
    }

    pub fn counters(&self) -> Arc<PcapCounters> {
        Arc::clone(&self.counters)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn damaged(&self, rest: &[u8], e: &PcapError) -> PcapFileError {
        let reason = match e {
            PcapError::IncompleteBuffer => "the file ends in the middle of a record".to_owned(),
            other => other.to_string(),
        };
        PcapFileError::Damaged {
            path: self.path.clone(),
            offset: self.data.len() - rest.len(),
            reason,
        }
    }

    /// Reads to the end (or until `stop`), waiting for the consumer rather
    /// than dropping: a file has no deadline.
    pub fn run(self, sink: PacketSink, stop: &StopFlag) -> Result<SourceEnd, PcapFileError> {
        let mut out = Batcher {
            sink: &sink,
            batch: Vec::with_capacity(BATCH),
            counters: &self.counters,
            pace: self.speed.map(|speed| Pace {
                speed,
                origin: None,
            }),
            stop,
        };
        let result = if self.data.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
            self.read_pcapng(&mut out, stop)
        } else {
            self.read_pcap(&mut out, stop)
        };
        // Every good packet before a damaged spot is still delivered.
        out.flush();
        result?;
        Ok(if stop.is_set() {
            SourceEnd::Stopped
        } else {
            SourceEnd::Ended(format!("end of {}", self.path.display()))
        })
    }

    fn read_pcap(&self, out: &mut Batcher, stop: &StopFlag) -> Result<(), PcapFileError> {
        let (mut rest, parser) =
            PcapParser::new(&self.data).map_err(|e| self.damaged(&self.data, &e))?;
        let header = parser.header();
        let iface = Interface {
            link: header.datalink,
            ns_per_unit: 1,
            binary_exp: None,
        };
        while !rest.is_empty() && !stop.is_set() {
            let (next, pkt) = parser
                .next_packet(rest)
                .map_err(|e| self.damaged(rest, &e))?;
            // PcapPacket timestamps are already nanoseconds.
            out.push(
                &iface,
                pkt.timestamp.as_nanos(),
                pkt.orig_len,
                &pkt.data,
                None,
            );
            rest = next;
        }
        Ok(())
    }

    fn read_pcapng(&self, out: &mut Batcher, stop: &StopFlag) -> Result<(), PcapFileError> {
        let (mut rest, mut parser) =
            PcapNgParser::new(&self.data).map_err(|e| self.damaged(&self.data, &e))?;
        let mut ifaces: Vec<Interface> = Vec::new();
        while !rest.is_empty() && !stop.is_set() {
            let (next, block) = parser
                .next_block(rest)
                .map_err(|e| self.damaged(rest, &e))?;
            match block {
                // A new section starts its own interface list.
                Block::SectionHeader(_) => ifaces.clear(),
                Block::InterfaceDescription(idb) => {
                    let tsresol = idb.options.iter().find_map(|o| match o {
                        InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                        _ => None,
                    });
                    ifaces.push(interface_from_idb(idb.linktype, tsresol));
                }
                Block::EnhancedPacket(epb) => {
                    let iface = ifaces.get(epb.interface_id as usize).ok_or_else(|| {
                        self.damaged(rest, &PcapError::InvalidInterfaceId(epb.interface_id))
                    })?;
                    // pcap-file 2.0 reads the raw timestamp as nanoseconds
                    // whatever if_tsresol says: rescale the raw units.
                    let units = epb.timestamp.as_nanos();
                    let flags = epb.options.iter().find_map(|o| match o {
                        EnhancedPacketOption::Flags(f) => Some(*f),
                        _ => None,
                    });
                    out.push(
                        iface,
                        iface.timestamp_ns(units),
                        epb.original_len,
                        &epb.data,
                        flags,
                    );
                }
                Block::SimplePacket(spb) => {
                    let iface = ifaces
                        .first()
                        .ok_or_else(|| self.damaged(rest, &PcapError::InvalidInterfaceId(0)))?;
                    // No timestamp in a simple packet block.
                    out.push(iface, 0, spb.original_len, &spb.data, None);
                }
                _ => {}
            }
            rest = next;
        }
        Ok(())
    }
}

/// Replay pacing: the first packet's time and when it was handed on.
struct Pace {
    speed: f64,
    origin: Option<(u64, Instant)>,
}

impl Pace {
    /// How long to wait before handing on a packet of time `ts_ns`.
    fn wait(&mut self, ts_ns: u64) -> Duration {
        let (t0, at) = *self.origin.get_or_insert((ts_ns, Instant::now()));
        let due = Duration::try_from_secs_f64(ts_ns.saturating_sub(t0) as f64 / 1e9 / self.speed)
            .unwrap_or(Duration::MAX);
        due.saturating_sub(at.elapsed())
    }
}

/// Strips link layers and hands packets on in batches (each packet on its
/// own time when replaying).
struct Batcher<'a> {
    sink: &'a PacketSink,
    batch: Vec<RawPacket>,
    counters: &'a PcapCounters,
    pace: Option<Pace>,
    stop: &'a StopFlag,
}

impl Batcher<'_> {
    fn push(
        &mut self,
        iface: &Interface,
        ts_ns: impl TryInto<u64>,
        orig_len: u32,
        frame: &[u8],
        epb_flags: Option<u32>,
    ) {
        self.counters.frames.fetch_add(1, Relaxed);
        let (at, mut direction) = match strip_link(iface.link, frame) {
            Ok(v) => v,
            Err(Skip::NotIp) => {
                self.counters.not_ip.fetch_add(1, Relaxed);
                return;
            }
            Err(Skip::UnknownLink) => {
                self.counters.unknown_link.fetch_add(1, Relaxed);
                return;
            }
        };
        // pcapng epb_flags bits 0-1: 1 inbound, 2 outbound.
        match epb_flags.map(|f| f & 0b11) {
            Some(1) => direction = Direction::In,
            Some(2) => direction = Direction::Out,
            _ => {}
        }
        let data = frame.get(at..).unwrap_or(&[]);
        let ts_ns = ts_ns.try_into().unwrap_or(u64::MAX);
        if let Some(wait) = self.pace.as_mut().map(|p| p.wait(ts_ns)) {
            if !wait.is_zero() {
                self.flush();
                // In slices, so a stop is noticed during long gaps.
                let until = Instant::now() + wait;
                while !self.stop.is_set() && Instant::now() < until {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()).min(SLICE));
                }
            }
        }
        self.batch.push(RawPacket {
            mono_ns: None,
            ts_ns,
            direction,
            ifindex: 0,
            orig_len: orig_len.saturating_sub(at as u32),
            data: data.to_vec(),
        });
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.sink.send_wait(std::mem::take(&mut self.batch));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_with_two_vlan_tags() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x86, 0xdd, 0x60]);
        let (at, dir) = strip_link(DataLink::ETHERNET, &f).ok().unwrap();
        assert_eq!((at, dir), (22, Direction::Unknown));
        assert_eq!(f[at], 0x60);
    }

    #[test]
    fn cooked_captures_carry_direction() {
        let mut sll = vec![0, 4];
        sll.extend_from_slice(&[0; 12]);
        sll.extend_from_slice(&[0x08, 0x00, 0x45]);
        assert_eq!(
            strip_link(DataLink::LINUX_SLL, &sll).ok(),
            Some((16, Direction::Out))
        );
        let mut sll2 = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6];
        sll2.extend_from_slice(&[0; 8]);
        assert_eq!(
            strip_link(DataLink::LINUX_SLL2, &sll2).ok(),
            Some((20, Direction::In))
        );
    }

    #[test]
    fn loopback_families_and_non_ip() {
        assert_eq!(
            strip_link(DataLink::NULL, &[2, 0, 0, 0, 0x45]).ok(),
            Some((4, Direction::Unknown))
        );
        assert_eq!(
            strip_link(DataLink::LOOP, &[0, 0, 0, 30, 0x60]).ok(),
            Some((4, Direction::Unknown))
        );
        assert!(strip_link(DataLink::NULL, &[7, 0, 0, 0]).is_err());
        let arp: Vec<u8> = [vec![0; 12], vec![0x08, 0x06]].concat();
        assert!(matches!(
            strip_link(DataLink::ETHERNET, &arp),
            Err(Skip::NotIp)
        ));
        assert!(matches!(
            strip_link(DataLink::IEEE802_11, &arp),
            Err(Skip::UnknownLink)
        ));
    }

    /// Reads `data` as a capture file to the end; returns the packets.
    fn read_all(data: Vec<u8>) -> (Result<SourceEnd, PcapFileError>, usize) {
        let Ok(src) = PcapSource::from_bytes(Path::new("fuzz"), data) else {
            return (Ok(SourceEnd::Stopped), 0);
        };
        let (sink, rx, _) = crate::pipeline::channel(1 << 16);
        let end = src.run(sink, &StopFlag::new());
        (end, rx.try_iter().map(|b| b.len()).sum())
    }

    const PCAP_HEADER: [u8; 24] = [
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ];
    const PCAPNG_HEADER: [u8; 28] = [
        0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 28, 0, 0, 0,
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        #[test]
        fn arbitrary_bytes_never_panic(
            ng in proptest::bool::ANY,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
        ) {
            let mut data = if ng { PCAPNG_HEADER.to_vec() } else { PCAP_HEADER.to_vec() };
            data.extend_from_slice(&body);
            let _ = read_all(data);
        }
    }

    #[test]
    fn valid_headers_alone_read_as_empty_files() {
        assert_eq!(read_all(PCAP_HEADER.to_vec()).1, 0);
        let (end, n) = read_all(PCAPNG_HEADER.to_vec());
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(n, 0);
    }

    #[test]
    fn pcapng_timestamp_resolutions() {
        let us = interface_from_idb(DataLink::RAW, None);
        assert_eq!(us.timestamp_ns(1_500_000), 1_500_000_000);
        let ns = interface_from_idb(DataLink::RAW, Some(9));
        assert_eq!(ns.timestamp_ns(42), 42);
        let bin = interface_from_idb(DataLink::RAW, Some(0x80 | 10));
        assert_eq!(bin.timestamp_ns(1024), 1_000_000_000);
    }
}

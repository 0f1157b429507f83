//! Passive capture with AF_PACKET: ICMP and ICMPv6 on every interface of the
//! namespace (or some), as the link layer sees them, without touching the
//! firewall. Needs CAP_NET_RAW to open, nothing once open.
//!
//! A memory-mapped TPACKET_V3 ring: the kernel fills blocks of packets and
//! hands a block over when it is full or its timeout passes, so a flood
//! costs one wake-up per block, not per packet, and idle costs nothing (a
//! blocking poll). A classic BPF program (`filter`) keeps everything but
//! ICMP out of the ring. The kernel stamps every packet (both directions);
//! drops when the ring is full come from `PACKET_STATISTICS`.
//!
//! Why our own ring and not the `pcap` crate (libpcap's TPACKET_V3): the
//! filter must follow IPv6 extension headers, which libpcap's `icmp6` does
//! not and its language can only do by a hand-unrolled expression that it
//! may then refuse to run in the kernel; the ring's block size, size and
//! timeout must be tunable, which libpcap does not expose; and icmpmon
//! would need libpcap's headers to build and the library to run. The price
//! is the ring's small unsafe core (`ring`), the only unsafe code here.
//!
//! What one packet looks like here: a packet forwarded by this host passes
//! two interfaces and is reported once on each (in, then out); echo pairing
//! takes the second sighting as a copy. On loopback the kernel shows each
//! packet twice (leaving, then arriving): the leaving copy is skipped, as
//! tcpdump does.

mod filter;
mod ring;

use crate::source::{CaptureError, Counters, Source, SourceEnd};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use icmpmon_core::batch::Batch;
use icmpmon_core::event::{Direction, RawPacket};

use crate::pipeline::{PacketSink, Stop};
use ring::Geometry;
use ring::Ring;

/// Ring defaults: 16 blocks of 1 MiB (8192 frames of 2 KiB), handed over
/// after 10 ms. A 5 s ping -f between namespaces loses nothing with them.
pub const BLOCK_SIZE_DEFAULT: u32 = 1 << 20;
pub const FRAMES_DEFAULT: u32 = 8192;
pub const TIMEOUT_MS_DEFAULT: u32 = 10;
/// A frame: the unit the ring's size is counted in (V3 packs packets of
/// any size into a block; this is the largest slot one can take).
pub const FRAME_SIZE: u32 = 2048;

/// Interfaces one filter can name (its jumps reach 255 instructions).
const MAX_INTERFACES: usize = 64;

/// Offsets in `struct tpacket_block_desc` and `struct tpacket3_hdr`.
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST_PKT: usize = 16;
const HDR_LEN: usize = 48;
const SLL_LEN: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketOptions {
    /// Interface names; empty: every interface of the namespace.
    pub interfaces: Vec<String>,
    pub snaplen: u32,
    pub block_size: u32,
    pub frames: u32,
    pub timeout_ms: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error(
        "AF_PACKET capture needs CAP_NET_RAW: run icmpmon with sudo, or give it the \
         capability (sudo setcap cap_net_raw+ep $(command -v icmpmon))"
    )]
    NeedsCapNetRaw,
    #[error("at most {MAX_INTERFACES} --interface options (or none: every interface)")]
    TooManyInterfaces,
    #[error("no interface {0:?} in this network namespace (see `ip link`)")]
    NoInterface(String),
    #[error(
        "bad ring geometry: the block size ({block_size}) must be a multiple of the page \
         size ({page}) and at least {FRAME_SIZE}"
    )]
    Geometry { block_size: u32, page: usize },
    #[error("cannot set up the packet ring ({what}): {err}")]
    Setup { what: &'static str, err: io::Error },
    #[error("packet socket: {0}")]
    Io(#[from] io::Error),
}

/// What the ring saw; shared with the summary.
#[derive(Debug, Default)]
pub struct PacketCounters {
    pub packets: AtomicU64,
    /// Packets the kernel dropped because the ring was full.
    pub ring_drops: AtomicU64,
    /// Loopback packets seen leaving (shown once, arriving).
    pub loopback_copies: AtomicU64,
    /// Frames whose header did not fit their block.
    pub bad_frames: AtomicU64,
    pub blocks: AtomicU64,
}

#[derive(Debug)]
pub struct PacketSource {
    ring: Ring,
    next_block: usize,
    interfaces: Vec<String>,
    geometry: Geometry,
    counters: Arc<PacketCounters>,
}

fn setup(what: &'static str) -> impl FnOnce(io::Error) -> PacketError {
    move |err| PacketError::Setup { what, err }
}

impl PacketSource {
    pub fn open(opts: &PacketOptions) -> Result<Self, PacketError> {
        let page = rustix::param::page_size();
        if opts.block_size as usize % page != 0 || opts.block_size < FRAME_SIZE {
            return Err(PacketError::Geometry {
                block_size: opts.block_size,
                page,
            });
        }
        if opts.interfaces.len() > MAX_INTERFACES {
            return Err(PacketError::TooManyInterfaces);
        }
        let ifindexes = opts
            .interfaces
            .iter()
            .map(|name| {
                nix::net::if_::if_nametoindex(name.as_str())
                    .map_err(|_| PacketError::NoInterface(name.clone()))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let fd: OwnedFd = ring::socket().map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => PacketError::NeedsCapNetRaw,
            _ => PacketError::Io(e),
        })?;
        // The filter comes before the bind: no packet reaches the socket
        // unfiltered.
        ring::attach_filter(fd.as_fd(), &filter::program(&ifindexes, opts.snaplen))
            .map_err(setup("attaching the BPF filter"))?;
        let per_block = opts.block_size / FRAME_SIZE;
        let geometry = Geometry {
            block_size: opts.block_size,
            blocks: opts.frames.div_ceil(per_block).max(2),
            frame_size: FRAME_SIZE,
            timeout_ms: opts.timeout_ms,
        };
        let ring = Ring::new(fd, geometry).map_err(setup("PACKET_RX_RING"))?;
        ring::bind_all(ring.fd()).map_err(setup("binding"))?;
        Ok(Self {
            ring,
            next_block: 0,
            interfaces: opts.interfaces.clone(),
            geometry,
            counters: Arc::default(),
        })
    }

    pub fn counters(&self) -> Arc<PacketCounters> {
        Arc::clone(&self.counters)
    }

    pub fn describe(&self) -> String {
        let on = if self.interfaces.is_empty() {
            "all interfaces".to_string()
        } else {
            self.interfaces.join(", ")
        };
        let g = self.geometry;
        format!(
            "packet (AF_PACKET on {on}, TPACKET_V3 ring {} x {} KiB, {} ms)",
            g.blocks,
            g.block_size / 1024,
            g.timeout_ms
        )
    }

    /// Hands on the blocks the kernel has filled, at most one round of the
    /// ring (a flood must not keep this loop from the stop); returns how
    /// many.
    fn drain(&mut self, sink: &PacketSink) -> usize {
        let mut blocks = 0;
        while blocks < self.ring.blocks() {
            let Some(block) = self.ring.user_block(self.next_block) else {
                break;
            };
            let mut batch = sink.batch();
            let skipped = read_block(block, &mut batch);
            self.ring.release(self.next_block);
            self.next_block = (self.next_block + 1) % self.ring.blocks();
            blocks += 1;
            let c = &self.counters;
            c.loopback_copies.fetch_add(skipped.loopback, Relaxed);
            c.bad_frames.fetch_add(skipped.bad, Relaxed);
            c.packets.fetch_add(batch.len() as u64, Relaxed);
            // An empty one goes back to the pool.
            sink.send(batch);
        }
        self.counters.blocks.fetch_add(blocks as u64, Relaxed);
        blocks
    }

    fn read_statistics(&self) {
        match ring::statistics(self.ring.fd()) {
            Ok((_, drops)) => {
                self.counters.ring_drops.fetch_add(drops, Relaxed);
            }
            Err(e) => tracing::warn!("PACKET_STATISTICS: {e}"),
        }
    }

    /// Captures until `stop`; then takes what the ring still holds,
    /// including the block being filled, which the kernel hands over when
    /// its timeout passes (waited for up to a second).
    pub fn run(mut self, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, PacketError> {
        use crate::netlink::{wait_readable, Wait};
        while wait_readable(&self.ring.fd(), None, Some(stop))? != Wait::Stopped {
            self.drain(&sink);
            self.read_statistics();
        }
        self.drain(&sink);
        let last = Duration::from_millis(u64::from(self.geometry.timeout_ms) + 20);
        if wait_readable(
            &self.ring.fd(),
            Some(last.min(Duration::from_secs(1))),
            None,
        )? == Wait::Readable
        {
            self.drain(&sink);
        }
        self.read_statistics();
        Ok(SourceEnd::Stopped)
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Skipped {
    loopback: u64,
    bad: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One frame of a block: (its packet, or why none; the next frame's offset).
fn read_frame(block: &[u8], at: usize) -> Option<(Option<RawPacket<'_>>, u32)> {
    let hdr = block.get(at..at + HDR_LEN + SLL_LEN)?;
    let next = u32_at(hdr, 0)?;
    let (sec, nsec) = (u32_at(hdr, 4)?, u32_at(hdr, 8)?);
    let (snaplen, len) = (u32_at(hdr, 12)? as usize, u32_at(hdr, 16)?);
    let net = usize::from(u16_at(hdr, 26)?);
    let sll = &hdr[HDR_LEN..];
    let ifindex = u32_at(sll, 4)?;
    let hatype = u16_at(sll, 8)?;
    let pkttype = sll[10];
    let data = block.get(at + net..at + net + snaplen)?;
    if pkttype == libc::PACKET_OUTGOING && hatype == libc::ARPHRD_LOOPBACK {
        return Some((None, next));
    }
    let direction = match pkttype {
        libc::PACKET_OUTGOING => Direction::Out,
        _ => Direction::In,
    };
    let packet = RawPacket {
        drop: None,
        ts_ns: u64::from(sec) * 1_000_000_000 + u64::from(nsec),
        mono_ns: None,
        direction,
        ifindex,
        orig_len: len,
        data,
    };
    Some((Some(packet), next))
}

/// The packets of one block the kernel handed over, bounds-checked: a frame
/// that does not fit ends the block (counted).
fn read_block(block: &[u8], out: &mut Batch) -> Skipped {
    let mut skipped = Skipped::default();
    let (Some(n), Some(first)) = (
        u32_at(block, BLOCK_NUM_PKTS),
        u32_at(block, BLOCK_FIRST_PKT),
    ) else {
        skipped.bad += 1;
        return skipped;
    };
    let mut at = first as usize;
    for i in 0..n {
        match read_frame(block, at) {
            Some((packet, next)) => {
                match packet {
                    Some(p) => out.push(p),
                    None => skipped.loopback += 1,
                }
                if next == 0 && i + 1 < n {
                    skipped.bad += u64::from(n - i - 1);
                    break;
                }
                at += next as usize;
            }
            None => {
                skipped.bad += u64::from(n - i);
                break;
            }
        }
    }
    skipped
}

impl From<PacketError> for CaptureError {
    fn from(e: PacketError) -> Self {
        CaptureError::new(e)
    }
}

impl Source for PacketSource {
    fn name(&self) -> &'static str {
        "packet"
    }
    fn describe(&self) -> String {
        self.describe()
    }
    // Open and bound, the socket needs no capability to read its ring and
    // statistics: everything is dropped.
    fn senders(&self) -> Vec<Arc<std::os::fd::OwnedFd>> {
        vec![self.ring.keeper()]
    }
    fn counters(&self) -> Arc<dyn Counters> {
        self.counters()
    }
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, CaptureError> {
        Ok(PacketSource::run(*self, sink, stop)?)
    }
}

impl Counters for PacketCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("captured", self.packets.load(Relaxed)),
            ("ring_drops", self.ring_drops.load(Relaxed)),
            ("blocks", self.blocks.load(Relaxed)),
            ("loopback_copies", self.loopback_copies.load(Relaxed)),
            ("bad_frames", self.bad_frames.load(Relaxed)),
        ]
    }
    fn losses(&self) -> Vec<(&'static str, u64)> {
        vec![("ring", self.ring_drops.load(Relaxed))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A block as the kernel lays it out, with frames of (pkttype, hatype,
    /// ifindex, bytes).
    fn block(frames: &[(u8, u16, u32, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[BLOCK_NUM_PKTS..BLOCK_NUM_PKTS + 4].copy_from_slice(&(frames.len() as u32).to_ne_bytes());
        let first = 48usize;
        b[BLOCK_FIRST_PKT..BLOCK_FIRST_PKT + 4].copy_from_slice(&(first as u32).to_ne_bytes());
        let mut at = first;
        for (i, (pkttype, hatype, ifindex, data)) in frames.iter().enumerate() {
            let net = 80usize;
            let size = (net + data.len()).next_multiple_of(16);
            let next = if i + 1 == frames.len() {
                0
            } else {
                size as u32
            };
            let h = &mut b[at..];
            h[0..4].copy_from_slice(&next.to_ne_bytes());
            h[4..8].copy_from_slice(&7u32.to_ne_bytes());
            h[8..12].copy_from_slice(&5u32.to_ne_bytes());
            h[12..16].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            h[16..20].copy_from_slice(&1500u32.to_ne_bytes());
            h[24..26].copy_from_slice(&(net as u16).to_ne_bytes());
            h[26..28].copy_from_slice(&(net as u16).to_ne_bytes());
            h[HDR_LEN + 4..HDR_LEN + 8].copy_from_slice(&ifindex.to_ne_bytes());
            h[HDR_LEN + 8..HDR_LEN + 10].copy_from_slice(&hatype.to_ne_bytes());
            h[HDR_LEN + 10] = *pkttype;
            h[net..net + data.len()].copy_from_slice(data);
            at += size;
        }
        b
    }

    #[test]
    fn frames_to_packets() {
        let b = block(&[
            (libc::PACKET_HOST, 1, 3, &[0x45, 1, 2]),
            (libc::PACKET_OUTGOING, 1, 4, &[0x60]),
            (libc::PACKET_OUTGOING, libc::ARPHRD_LOOPBACK, 1, &[0x45]),
            (libc::PACKET_HOST, libc::ARPHRD_LOOPBACK, 1, &[0x45, 9]),
        ]);
        let mut batch = Batch::default();
        let skipped = read_block(&b, &mut batch);
        let out: Vec<_> = batch.iter().collect();
        assert_eq!(
            skipped,
            Skipped {
                loopback: 1,
                bad: 0
            }
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].direction, Direction::In);
        assert_eq!(out[0].ifindex, 3);
        assert_eq!(out[0].data, [0x45, 1, 2]);
        assert_eq!(out[0].orig_len, 1500);
        assert_eq!(out[0].ts_ns, 7_000_000_005);
        assert_eq!(out[1].direction, Direction::Out);
        assert_eq!(out[2].data, [0x45, 9]);
    }

    #[test]
    fn frame_past_the_block_is_counted() {
        let mut b = block(&[
            (libc::PACKET_HOST, 1, 3, &[1]),
            (libc::PACKET_HOST, 1, 3, &[2]),
        ]);
        // The first frame's next offset points out of the block.
        b[48..52].copy_from_slice(&4000u32.to_ne_bytes());
        let mut out = Batch::default();
        assert_eq!(read_block(&b, &mut out).bad, 1);
        assert_eq!(out.len(), 1);
    }

    proptest! {
        #[test]
        fn any_block_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut out = Batch::default();
            let _ = read_block(&bytes, &mut out);
        }
    }
}

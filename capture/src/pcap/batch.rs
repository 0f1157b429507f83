//! Handing a file's packets on: link layers stripped, in batches bounded
//! in packets and bytes, each packet on its own time when replaying.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::select;

use super::link::{strip_link, Interface, Skip};
use crate::pipeline::{PacketSink, Stop};
use icmpmon_core::batch::Batch;
use icmpmon_core::event::{Direction, RawPacket};

/// Packets handed on per batch, and bytes: with at most 8 batches in the
/// channel and as many reused ones kept, what a file run holds stays near
/// 20 × (1 MiB + one record), buffers grown to twice that at worst.
pub(super) const BATCH: usize = 512;
pub(super) const BATCH_BYTES: usize = 1 << 20;

/// What reading the file saw; shared with the summary.
#[derive(Debug, Default)]
pub struct PcapCounters {
    pub frames: AtomicU64,
    /// Frames whose link layer carries no IPv4/IPv6 (ARP, LLDP, …).
    pub not_ip: AtomicU64,
    /// Frames of a link type icmpmon does not decode.
    pub unknown_link: AtomicU64,
}

/// Replay pacing: the first packet's time and when it was handed on.
pub(super) struct Pace {
    pub(super) speed: f64,
    pub(super) origin: Option<(u64, Instant)>,
}

impl Pace {
    /// How long to wait before handing on a packet of time `ts_ns`.
    pub(super) fn wait(&mut self, ts_ns: u64) -> Duration {
        let (t0, at) = *self.origin.get_or_insert((ts_ns, Instant::now()));
        let due = Duration::try_from_secs_f64(ts_ns.saturating_sub(t0) as f64 / 1e9 / self.speed)
            .unwrap_or(Duration::MAX);
        due.saturating_sub(at.elapsed())
    }
}

/// Strips link layers and hands packets on in batches (each packet on its
/// own time when replaying).
pub(super) struct Batcher<'a> {
    pub(super) sink: &'a PacketSink,
    pub(super) batch: Batch,
    pub(super) counters: &'a PcapCounters,
    pub(super) pace: Option<Pace>,
    pub(super) stop: &'a Stop,
    /// The consumer is gone, or the run stopped while handing on.
    pub(super) closed: bool,
}

impl Batcher<'_> {
    pub(super) fn push(
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
                select! {
                    recv(self.stop.stopped()) -> _ => {}
                    default(wait) => {}
                }
            }
        }
        self.batch.push(RawPacket {
            drop: None,
            mono_ns: None,
            ts_ns,
            direction,
            ifindex: 0,
            orig_len: orig_len.saturating_sub(at as u32),
            data,
        });
        if self.batch.len() >= BATCH || self.batch.bytes() >= BATCH_BYTES {
            self.flush();
        }
    }

    pub(super) fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let full = std::mem::replace(&mut self.batch, self.sink.batch());
        if !self.sink.send_wait(full, self.stop) {
            self.closed = true;
        }
    }
}

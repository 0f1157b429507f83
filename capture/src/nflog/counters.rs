//! What the NFLOG source counts, shared with the summary and the metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::source::Counters;

/// What the receive side saw; shared with the summary.
#[derive(Debug, Default)]
pub struct NflogCounters {
    pub packets: AtomicU64,
    /// Packets missing from the groups' sequence numbers.
    pub sequence_lost: AtomicU64,
    /// Matched by the rules, never seen, and no gap: counted at the end.
    pub unaccounted: AtomicU64,
    /// ENOBUFS on receive (what they lost shows as sequence gaps).
    pub socket_overruns: AtomicU64,
    /// How long `out` packets went in batches (a flood), in ms: their
    /// times, and the RTTs of pings this host sent, were up to
    /// `OUT_BATCH_SPAN` late then.
    pub out_batched_ms: AtomicU64,
    pub bad_messages: AtomicU64,
}

impl Counters for NflogCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("logged", self.packets.load(Relaxed)),
            ("sequence_lost", self.sequence_lost.load(Relaxed)),
            ("unaccounted", self.unaccounted.load(Relaxed)),
            ("socket_overruns", self.socket_overruns.load(Relaxed)),
            ("bad_messages", self.bad_messages.load(Relaxed)),
            ("out_batched_ms", self.out_batched_ms.load(Relaxed)),
        ]
    }
    fn losses(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("log_sequence", self.sequence_lost.load(Relaxed)),
            ("log_unaccounted", self.unaccounted.load(Relaxed)),
        ]
    }
}

//! The BPF source's counters: the programs' (per CPU in the kernel,
//! summed by the reader) and the reader's own.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::source::Counters;

/// The counters of the programs (summed over CPUs, copied every
/// `COUNTER_INTERVAL` and at the end) and of the reader.
#[derive(Debug, Default)]
pub struct BpfCounters {
    /// ICMP packets the netfilter programs took, wrote, and lost to a
    /// full ring buffer: seen = delivered + lost.
    pub seen: AtomicU64,
    pub delivered: AtomicU64,
    pub lost: AtomicU64,
    pub truncated: AtomicU64,
    /// The same for dropped ICMP packets of this namespace.
    pub drops_seen: AtomicU64,
    pub drops_delivered: AtomicU64,
    pub drops_lost: AtomicU64,
    /// Records read from the ring buffer, and those that did not decode.
    pub records: AtomicU64,
    pub bad_records: AtomicU64,
}

/// Indices of `enum { C_SEEN, … }` in icmpmon.bpf.c.
pub(crate) const KERNEL_COUNTERS: usize = 7;

impl BpfCounters {
    /// Every packet the programs took is written or lost, and every one
    /// written was read.
    pub(crate) fn balanced(&self) -> bool {
        let v = |c: &AtomicU64| c.load(Relaxed);
        v(&self.seen) == v(&self.delivered) + v(&self.lost)
            && v(&self.drops_seen) == v(&self.drops_delivered) + v(&self.drops_lost)
            && v(&self.records) == v(&self.delivered) + v(&self.drops_delivered)
    }

    pub(crate) fn store_kernel(&self, c: [u64; KERNEL_COUNTERS]) {
        let fields = [
            &self.seen,
            &self.delivered,
            &self.lost,
            &self.truncated,
            &self.drops_seen,
            &self.drops_delivered,
            &self.drops_lost,
        ];
        for (f, v) in fields.into_iter().zip(c) {
            f.store(v, Relaxed);
        }
    }
}

impl Counters for BpfCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("records", self.records.load(Relaxed)),
            ("seen", self.seen.load(Relaxed)),
            ("delivered", self.delivered.load(Relaxed)),
            ("lost", self.lost.load(Relaxed)),
            ("truncated", self.truncated.load(Relaxed)),
            ("drops_seen", self.drops_seen.load(Relaxed)),
            ("drops_delivered", self.drops_delivered.load(Relaxed)),
            ("drops_lost", self.drops_lost.load(Relaxed)),
            ("bad_records", self.bad_records.load(Relaxed)),
        ]
    }
    fn losses(&self) -> Vec<(&'static str, u64)> {
        vec![(
            "ring_buffer",
            self.lost.load(Relaxed) + self.drops_lost.load(Relaxed),
        )]
    }
}

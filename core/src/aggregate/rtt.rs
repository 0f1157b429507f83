//! Round-trip time statistics of one peer pair: exact min / max / mean
//! over the whole run, RFC 3550 jitter, and percentiles (nearest rank) over
//! the last `HISTORY` samples (which the dashboard also draws).

use std::collections::VecDeque;

use serde::Serialize;

pub const HISTORY: usize = 128;

/// Upper bounds (µs) of the RTT histogram's buckets, 50 µs to 30 s, as
/// exported to Prometheus; one more bucket holds what is above the last.
pub const BUCKETS_US: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// Every sample of a run in fixed buckets (not cumulative: bucket `i`
/// holds samples above `BUCKETS_US[i - 1]` up to `BUCKETS_US[i]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    pub count: u64,
    pub sum_us: u64,
    pub buckets: [u64; BUCKETS_US.len() + 1],
}

impl Histogram {
    fn add(&mut self, us: u64) {
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.buckets[BUCKETS_US.partition_point(|&b| b < us)] += 1;
    }

    /// What was added since `base` (an earlier copy of the same histogram).
    pub fn since(&self, base: &Histogram) -> Histogram {
        let mut d = Histogram {
            count: self.count.saturating_sub(base.count),
            sum_us: self.sum_us.saturating_sub(base.sum_us),
            buckets: self.buckets,
        };
        for (b, base) in d.buckets.iter_mut().zip(base.buckets) {
            *b = b.saturating_sub(base);
        }
        d
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Histogram) {
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        for (b, o) in self.buckets.iter_mut().zip(other.buckets) {
            *b += o;
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RttStats {
    hist: Histogram,
    min_us: u64,
    max_us: u64,
    /// Smoothed mean deviation of consecutive samples (RFC 3550), µs.
    jitter_us: f64,
    last_us: Option<u64>,
    history: VecDeque<u32>,
}

/// What a snapshot shows of `RttStats`; all in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RttSummary {
    pub samples: u64,
    pub min_us: u64,
    pub avg_us: f64,
    pub max_us: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub jitter_us: f64,
}

impl RttStats {
    /// Back to no sample, keeping the history's room.
    pub(super) fn clear(&mut self) {
        let RttStats {
            hist,
            min_us,
            max_us,
            jitter_us,
            last_us,
            history,
        } = self;
        (*hist, *min_us, *max_us, *jitter_us, *last_us) = Default::default();
        history.clear();
    }

    pub fn add(&mut self, us: u64) {
        if self.hist.count == 0 {
            self.min_us = us;
        }
        self.hist.add(us);
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
        if let Some(last) = self.last_us {
            self.jitter_us += (last.abs_diff(us) as f64 - self.jitter_us) / 16.0;
        }
        self.last_us = Some(us);
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history
            .push_back(u32::try_from(us).unwrap_or(u32::MAX));
    }

    /// Mean over the run, µs (None before the first sample): cheap, for
    /// ordering peers without building their summaries.
    pub fn mean_us(&self) -> Option<f64> {
        let h = &self.hist;
        (h.count > 0).then(|| h.sum_us as f64 / h.count as f64)
    }

    /// Every sample so far, in the exported buckets.
    pub fn histogram(&self) -> &Histogram {
        &self.hist
    }

    /// The last samples, oldest first.
    pub fn history(&self) -> impl Iterator<Item = u32> + '_ {
        self.history.iter().copied()
    }

    pub fn summary(&self) -> Option<RttSummary> {
        let (count, sum_us) = (self.hist.count, self.hist.sum_us);
        if count == 0 {
            return None;
        }
        let mut sorted: Vec<u32> = self.history.iter().copied().collect();
        sorted.sort_unstable();
        // Nearest rank: the smallest sample with at least p% of them at or
        // below it (with two samples, p95 is the larger one).
        let pct = |p: usize| u64::from(sorted[(sorted.len() * p).div_ceil(100).max(1) - 1]);
        Some(RttSummary {
            samples: count,
            min_us: self.min_us,
            avg_us: sum_us as f64 / count as f64,
            max_us: self.max_us,
            p50_us: pct(50),
            p95_us: pct(95),
            jitter_us: self.jitter_us,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_samples() {
        let mut r = RttStats::default();
        assert!(r.summary().is_none());
        for us in 1..=100 {
            r.add(us);
        }
        let s = r.summary().unwrap();
        assert_eq!((s.samples, s.min_us, s.max_us), (100, 1, 100));
        assert_eq!(s.avg_us, 50.5);
        assert_eq!((s.p50_us, s.p95_us), (50, 95));
        assert!(s.jitter_us > 0.9 && s.jitter_us <= 1.0, "{}", s.jitter_us);
        // History is bounded; min/max/avg still cover every sample.
        for _ in 0..1000 {
            r.add(7);
        }
        assert_eq!(r.history().count(), HISTORY);
        let s = r.summary().unwrap();
        assert_eq!((s.min_us, s.max_us, s.p50_us), (1, 100, 7));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut r = RttStats::default();
        r.add(100);
        let s = r.summary().unwrap();
        assert_eq!((s.p50_us, s.p95_us), (100, 100));
        r.add(300);
        let s = r.summary().unwrap();
        assert_eq!((s.p50_us, s.p95_us), (100, 300), "p95 of two is the larger");
        for us in [200, 400, 500, 600, 700, 800, 900, 1000] {
            r.add(us);
        }
        let s = r.summary().unwrap();
        assert_eq!((s.p50_us, s.p95_us), (500, 1000));
    }

    #[test]
    fn histogram_buckets_include_their_upper_bound() {
        let mut r = RttStats::default();
        for us in [0, 50, 51, 30_000_000, 30_000_001, u64::MAX] {
            r.add(us);
        }
        let h = *r.histogram();
        assert_eq!(h.count, 6);
        assert_eq!((h.buckets[0], h.buckets[1]), (2, 1));
        assert_eq!(h.buckets[BUCKETS_US.len() - 1], 1);
        assert_eq!(h.buckets[BUCKETS_US.len()], 2);
        assert_eq!(h.buckets.iter().sum::<u64>(), h.count);
        let mut r = RttStats::default();
        r.add(40);
        let h = *r.histogram();
        r.add(300);
        let d = r.histogram().since(&h);
        assert_eq!((d.count, d.sum_us, d.buckets[3]), (1, 300, 1));
        assert_eq!(d.buckets.iter().sum::<u64>(), 1);
    }
}

//! Round-trip time statistics of one peer pair: exact min / max / mean
//! over the whole run, RFC 3550 jitter, and percentiles (nearest rank) over
//! the last `HISTORY` samples (which the dashboard also draws).

use std::collections::VecDeque;

use serde::Serialize;

pub const HISTORY: usize = 128;

#[derive(Debug, Clone, Default)]
pub struct RttStats {
    count: u64,
    sum_us: u64,
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
    pub fn add(&mut self, us: u64) {
        if self.count == 0 {
            self.min_us = us;
        }
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
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
        (self.count > 0).then(|| self.sum_us as f64 / self.count as f64)
    }

    /// The last samples, oldest first.
    pub fn history(&self) -> impl Iterator<Item = u32> + '_ {
        self.history.iter().copied()
    }

    pub fn summary(&self) -> Option<RttSummary> {
        if self.count == 0 {
            return None;
        }
        let mut sorted: Vec<u32> = self.history.iter().copied().collect();
        sorted.sort_unstable();
        // Nearest rank: the smallest sample with at least p% of them at or
        // below it (with two samples, p95 is the larger one).
        let pct = |p: usize| u64::from(sorted[(sorted.len() * p).div_ceil(100).max(1) - 1]);
        Some(RttSummary {
            samples: self.count,
            min_us: self.min_us,
            avg_us: self.sum_us as f64 / self.count as f64,
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
}

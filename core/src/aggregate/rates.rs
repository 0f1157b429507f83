//! Message rates over the last 1, 10 and 60 seconds, from per-second
//! buckets in a ring (fixed memory). A window counts whole seconds that
//! have ended, so a rate does not dip while the current second fills.

use serde::Serialize;

const SLOTS: usize = 64;
pub const WINDOWS: [u64; 3] = [1, 10, 60];

/// Messages per second over each of `WINDOWS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WindowRates {
    pub per_s_1s: f64,
    pub per_s_10s: f64,
    pub per_s_60s: f64,
}

#[derive(Debug, Clone)]
pub struct SecondSeries {
    /// Which second each slot holds (`u64::MAX`: none yet).
    secs: [u64; SLOTS],
    counts: [u32; SLOTS],
}

impl Default for SecondSeries {
    fn default() -> Self {
        Self {
            secs: [u64::MAX; SLOTS],
            counts: [0; SLOTS],
        }
    }
}

impl SecondSeries {
    pub fn add(&mut self, sec: u64) {
        let slot = (sec % SLOTS as u64) as usize;
        if self.secs[slot] != sec {
            self.secs[slot] = sec;
            self.counts[slot] = 0;
        }
        self.counts[slot] = self.counts[slot].saturating_add(1);
    }

    /// Messages in second `sec` (0 if it left the ring).
    pub fn at(&self, sec: u64) -> u32 {
        let slot = (sec % SLOTS as u64) as usize;
        if self.secs[slot] == sec {
            self.counts[slot]
        } else {
            0
        }
    }

    /// Messages in the `n` whole seconds before `now_sec`.
    pub fn sum_before(&self, now_sec: u64, n: u64) -> u64 {
        (1..=n)
            .filter_map(|back| now_sec.checked_sub(back))
            .map(|s| u64::from(self.at(s)))
            .sum()
    }

    pub fn rates(&self, now_sec: u64) -> WindowRates {
        let r = |n| self.sum_before(now_sec, n) as f64 / n as f64;
        WindowRates {
            per_s_1s: r(WINDOWS[0]),
            per_s_10s: r(WINDOWS[1]),
            per_s_60s: r(WINDOWS[2]),
        }
    }

    /// Counts of the `n` seconds before `now_sec`, oldest first (for a
    /// sparkline).
    pub fn history(&self, now_sec: u64, n: u64) -> Vec<u32> {
        (1..=n)
            .rev()
            .map(|back| now_sec.checked_sub(back).map_or(0, |s| self.at(s)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_whole_seconds_only() {
        let mut s = SecondSeries::default();
        for sec in 100..160 {
            for _ in 0..(sec - 99) {
                s.add(sec);
            }
        }
        // Second 159 holds 60 and is current: not counted yet.
        let r = s.rates(159);
        assert_eq!(r.per_s_1s, 59.0);
        assert_eq!(r.per_s_10s, (50..=59).sum::<u64>() as f64 / 10.0);
        assert_eq!(r.per_s_60s, (1..=59).sum::<u64>() as f64 / 60.0);
        // Seconds that left the ring count as 0.
        assert_eq!(s.rates(1000).per_s_60s, 0.0);
        assert_eq!(s.history(102, 3), vec![0, 1, 2]);
    }
}

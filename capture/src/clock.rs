//! The kernel's two clocks as the sources and the aggregator thread relate
//! them: records stamped on the monotonic clock (BPF) get a wall-clock
//! time, and echo timeouts run on the monotonic clock.

use rustix::time::{clock_gettime, ClockId, Timespec};

fn ns(t: Timespec) -> i128 {
    i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, in nanoseconds: it changes when
/// the wall clock is stepped (NTP, an administrator), not as time passes.
pub fn wall_offset_ns() -> i128 {
    let mono = clock_gettime(ClockId::Monotonic);
    let real = clock_gettime(ClockId::Realtime);
    ns(real) - ns(mono)
}

/// CLOCK_MONOTONIC now, in nanoseconds (the module's and BPF's
/// `ts_mono_ns` clock).
pub fn monotonic_ns() -> u64 {
    u64::try_from(ns(clock_gettime(ClockId::Monotonic))).unwrap_or(0)
}

//! The kernel's two clocks as the sources and the aggregator thread relate
//! them: records stamped on the monotonic clock (BPF) get a wall-clock
//! time, and echo timeouts run on the monotonic clock.

use rustix::time::{clock_gettime, ClockId, Timespec};

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, in nanoseconds: it changes when
/// the wall clock is stepped (NTP, an administrator), not as time passes.
pub fn wall_offset_ns() -> i128 {
    let ns = |t: Timespec| i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
    let mono = clock_gettime(ClockId::Monotonic);
    let real = clock_gettime(ClockId::Realtime);
    ns(real) - ns(mono)
}

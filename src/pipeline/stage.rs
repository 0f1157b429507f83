//! The one trait every front end of the aggregator thread implements: the
//! row and alert outputs, the metrics publisher and the dashboard. The
//! thread (`driver`) owns the aggregator and hands each stage what happened,
//! in capture order; a stage never blocks and never touches capture.

use std::time::Instant;

use icmpmon_capture::pipeline::StopReason;
use icmpmon_core::aggregate::{Aggregator, Flag, KernelSample};
use icmpmon_core::event::{IcmpEvent, RawPacket};

use crate::attribution::join::Ready;
use crate::config::Live;

/// What the aggregator thread hands its stages.
#[derive(Debug)]
pub(crate) enum Record<'a> {
    /// A message the run kept, just aggregated as number `seq`, with the
    /// packet it came in; its row follows (at once, or once attribution
    /// has answered).
    Event {
        ev: &'a IcmpEvent,
        raw: &'a RawPacket<'a>,
        seq: u64,
    },
    /// A message's row, complete: RTT and, when looked up, the process.
    Row(&'a Ready),
    /// Anomaly flags just raised.
    Alerts(&'a [Flag]),
    /// The kernel's ICMP counters, sampled.
    Kernel(&'a KernelSample),
}

/// A wake-up of the aggregator thread (at least every 100 ms).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tick {
    pub now: Instant,
    /// The thread woke up with nothing to do: a moment to flush.
    pub idle: bool,
    /// Set when the aggregator's clock moved on (live sources), to this
    /// wall-clock time.
    pub clock_ns: Option<u64>,
}

/// Whether the run goes on after a stage's step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Go,
    /// The stage is done (--count reached, its output closed): the run
    /// stops for this reason.
    Stop(StopReason),
}

/// A front end fed by the aggregator thread.
pub(crate) trait Stage {
    /// Takes one record; `agg` is the state with it.
    fn on_record(&mut self, record: &Record, agg: &Aggregator) -> Flow;
    /// What is due by the clock: flushes, publications.
    fn on_tick(&mut self, _tick: Tick, _agg: &Aggregator) -> Flow {
        Flow::Go
    }
    /// SIGHUP: the new live settings, if --config was read again; files
    /// are reopened.
    fn on_reload(&mut self, _live: Option<&Live>) -> Flow {
        Flow::Go
    }
    /// The end of the run: the last flush or publication.
    fn finish(&mut self, _agg: &Aggregator) -> Flow {
        Flow::Go
    }
}

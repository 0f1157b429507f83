//! The aggregator thread: receives raw packets from the capture thread,
//! parses, filters and aggregates them, and hands each stage (outputs,
//! metrics, dashboard) what happened. It owns the aggregator: nothing else
//! touches its state. Rows wait for attribution here (`Join`) when it is
//! on, in capture order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use icmpmon_capture::pipeline::{Batches, Stop, StopReason};
use icmpmon_core::aggregate::{Aggregator, Config, Snapshot};
use icmpmon_core::batch::Batch;
use icmpmon_core::event::now_ns;
use icmpmon_core::filter::Filter;
use icmpmon_core::parse::{parse, ParseError};

use super::stage::{Flow, Record, Stage, Tick};
use crate::attribution::join::{Join, Ready};
use crate::attribution::{Host, News};
use crate::config::Reload;
use crate::dashboard::Dashboard;
use crate::metrics::Publisher;
use crate::outputs::{Outputs, PacketFile};

/// How often the thread wakes up when idle (flushes, the clock).
const IDLE_TICK: Duration = Duration::from_millis(100);

/// What the thread saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub packets: u64,
    pub rows: u64,
    /// Well-formed IP packets that are not ICMP (capture files).
    pub not_icmp: u64,
    /// ICMP messages `--filter` left out.
    pub filtered: u64,
    pub parse_errors: BTreeMap<&'static str, u64>,
    pub output_error: Option<anyhow::Error>,
    /// Packets saved by `--write`.
    pub packets_written: u64,
    /// Socket lookups the attribution thread made, and /proc scans among
    /// them.
    pub lookups: u64,
    pub proc_scans: u64,
}

impl Tally {
    pub fn parse_error_total(&self) -> u64 {
        self.parse_errors.values().sum()
    }
}

/// The thread's settings.
#[derive(Debug)]
pub(crate) struct Plan {
    pub filter: Filter,
    pub config: Config,
    pub count: Option<u64>,
    pub deadline: Option<Instant>,
    /// The clock moves on while idle (loss timeouts); for a file, time is
    /// the packets' own.
    pub live: bool,
    pub stop: Stop,
    pub reloads: Receiver<Reload>,
    /// Live sources: the attribution thread (kernel counters) and whether
    /// rows wait for attribution.
    pub host: Option<Host>,
    pub attribute: bool,
}

/// The stages the thread feeds, each once per record in this order.
#[derive(Debug)]
pub(crate) struct Stages {
    pub outputs: Outputs,
    /// `--write`.
    pub packets: Option<PacketFile>,
    pub metrics: Option<Publisher>,
    pub dashboard: Option<Dashboard>,
}

impl Stages {
    fn each(&mut self) -> impl Iterator<Item = &mut dyn Stage> {
        let outputs: &mut dyn Stage = &mut self.outputs;
        let packets = self.packets.as_mut().map(|p| p as &mut dyn Stage);
        let metrics = self.metrics.as_mut().map(|m| m as &mut dyn Stage);
        let dashboard = self.dashboard.as_mut().map(|d| d as &mut dyn Stage);
        std::iter::once(outputs)
            .chain(packets)
            .chain(metrics)
            .chain(dashboard)
    }

    /// Runs `step` on every stage; a stage that is done stops the run.
    fn all(&mut self, stop: &Stop, mut step: impl FnMut(&mut dyn Stage) -> Flow) {
        for s in self.each() {
            if let Flow::Stop(why) = step(s) {
                stop.set(why);
            }
        }
    }
}

/// Gives the aggregator a live run's clocks (`Aggregator::set_clocks`):
/// echo timeouts count on the monotonic clock.
fn read_clocks(agg: &mut Aggregator) {
    use icmpmon_capture::clock::{monotonic_ns, wall_offset_ns};
    let offset = u64::try_from(wall_offset_ns().max(0)).unwrap_or(u64::MAX);
    agg.set_clocks(offset, monotonic_ns());
}

/// What the thread wakes up for.
enum Got {
    Batch(Batch),
    News(News),
    /// The attribution thread ended (it only does when told to, or failing).
    NewsGone,
    Idle,
    Closed,
}

/// The thread's state between wake-ups.
struct Driver {
    agg: Aggregator,
    stages: Stages,
    join: Option<Join>,
    stop: Stop,
    tally: Tally,
    count: Option<u64>,
    /// Messages taken so far: --count stops taking at once, even while
    /// rows still wait for attribution.
    taken: u64,
}

impl Driver {
    fn record(&mut self, r: &Record) {
        let agg = &self.agg;
        self.stages.all(&self.stop, |s| s.on_record(r, agg));
    }

    fn alerts(&mut self) {
        let flags = self.agg.take_alerts();
        if !flags.is_empty() {
            self.record(&Record::Alerts(&flags));
        }
    }

    /// A row goes out, with what attribution found for it (counted by the
    /// aggregator whether or not rows are still written).
    fn emit(&mut self, r: Ready) {
        if let Some(who) = &r.who {
            self.agg.attributed(&r.ev, Some(r.seq), who);
        }
        self.record(&Record::Row(&r));
    }

    fn batch(&mut self, batch: &Batch, filter: &Filter) {
        for raw in batch.iter() {
            self.tally.packets += 1;
            let ev = match parse(&raw) {
                Ok(ev) => ev,
                Err(ParseError::NotIcmp(_)) => {
                    self.tally.not_icmp += 1;
                    continue;
                }
                Err(e) => {
                    *self.tally.parse_errors.entry(e.label()).or_default() += 1;
                    continue;
                }
            };
            if !self.stages.outputs.writing() || self.count.is_some_and(|c| self.taken >= c) {
                continue;
            }
            if !filter.matches(&ev) {
                self.tally.filtered += 1;
                continue;
            }
            self.taken += 1;
            let outcome = self.agg.ingest(&ev);
            let seq = self.agg.events();
            self.record(&Record::Event {
                ev: &ev,
                raw: &raw,
                seq,
            });
            let r = Ready {
                ev,
                rtt_us: outcome.rtt_us,
                seq,
                who: None,
            };
            let passed = match self.join.as_mut() {
                Some(j) => j.push(r),
                None => Some(r),
            };
            if let Some(r) = passed {
                self.emit(r);
            }
        }
        self.alerts();
    }

    /// Rows whose answer came or whose time is up (`all`: every one).
    fn release(&mut self, all: bool) {
        let ready = match self.join.as_mut() {
            Some(j) => j.ready(all),
            None => return,
        };
        for r in ready {
            self.emit(r);
        }
    }
}

/// Runs until the capture side hangs up; returns what it saw, the final
/// snapshot and the stages, for the summary. A panic here stops the run
/// (the capture side sees `stop`, and the receiver's drop).
pub(crate) fn run(rx: Batches, stages: Stages, plan: Plan) -> (Tally, Snapshot, Stages) {
    let Plan {
        mut filter,
        config,
        count,
        mut deadline,
        live,
        stop,
        reloads,
        host,
        attribute,
    } = plan;
    let _stop_on_panic = stop.on_panic(StopReason::Failed);
    let mut news = host
        .as_ref()
        .map_or_else(crossbeam_channel::never, |h| h.news.clone());
    let mut d = Driver {
        agg: Aggregator::new(config),
        stages,
        join: host
            .as_ref()
            .filter(|_| attribute)
            .map(|h| Join::new(h.asks.clone())),
        stop,
        tally: Tally::default(),
        count,
        taken: 0,
    };
    let mut ticked = Instant::now();
    loop {
        let mut wake = Instant::now() + IDLE_TICK;
        for t in [deadline, d.join.as_ref().and_then(Join::deadline)]
            .into_iter()
            .flatten()
        {
            wake = wake.min(t);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        let got = crossbeam_channel::select! {
            recv(rx.receiver()) -> m => m.map_or(Got::Closed, Got::Batch),
            recv(news) -> n => n.map_or(Got::NewsGone, Got::News),
            default(wait) => Got::Idle,
        };
        let (idle, closed) = (matches!(got, Got::Idle), matches!(got, Got::Closed));
        match got {
            Got::Batch(batch) => {
                if live {
                    read_clocks(&mut d.agg);
                }
                d.batch(&batch, &filter);
                rx.recycle(batch);
            }
            Got::News(News::Answer(k, a)) => {
                if let Some(j) = d.join.as_mut() {
                    j.answer(k, a);
                }
            }
            Got::News(News::Kernel(sample)) => {
                d.record(&Record::Kernel(&sample));
                d.agg.kernel_sample(sample);
                d.alerts();
            }
            Got::NewsGone => news = crossbeam_channel::never(),
            Got::Idle | Got::Closed => {}
        }
        d.release(false);
        // By the clock, not only when idle: a stream of answers must not
        // hold loss timeouts back.
        let mut clock_ns = None;
        if ticked.elapsed() >= IDLE_TICK || idle {
            if live {
                let now = now_ns();
                read_clocks(&mut d.agg);
                d.agg.tick(now);
                clock_ns = Some(now);
            }
            ticked = Instant::now();
        }
        if closed {
            break;
        }
        while let Ok(r) = reloads.try_recv() {
            if let Some(live) = &r.live {
                filter = live.filter.clone();
                d.agg.set_thresholds(live.thresholds);
                d.agg.set_groups(live.groups.clone());
            }
            d.stages.all(&d.stop, |s| s.on_reload(r.live.as_ref()));
        }
        let tick = Tick {
            now: Instant::now(),
            idle,
            clock_ns,
        };
        let agg = &d.agg;
        d.stages.all(&d.stop, |s| s.on_tick(tick, agg));
        // Once: then the capture side winds down, and this loop waits for
        // it without a deadline.
        if deadline.is_some_and(|t| Instant::now() >= t) {
            d.stop.set(StopReason::Duration);
            deadline = None;
        }
    }
    // Rows still waiting get their answers if they come in time.
    while let Some(t) = d.join.as_ref().and_then(Join::deadline) {
        // A timeout lets the front row go; the rows behind keep their own
        // time.
        match news.recv_deadline(t) {
            Ok(News::Answer(k, a)) => {
                if let Some(j) = d.join.as_mut() {
                    j.answer(k, a);
                }
            }
            Ok(News::Kernel(s)) => d.agg.kernel_sample(s),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        d.release(false);
    }
    d.release(true);
    // The attribution thread's waits and sends fail once every sender of
    // asks and every receiver of news has gone: it ends.
    d.join = None;
    drop(news);
    if let Some(h) = host {
        use std::sync::atomic::Ordering::Relaxed;
        let work = h.work.clone();
        h.stop();
        d.tally.lookups = work.lookups.load(Relaxed);
        d.tally.proc_scans = work.scans.load(Relaxed);
    }
    if live {
        read_clocks(&mut d.agg);
        d.agg.tick(now_ns());
    }
    d.alerts();
    let agg = &d.agg;
    d.stages.all(&d.stop, |s| s.finish(agg));
    d.tally.rows = d.stages.outputs.rows();
    d.tally.output_error = d.stages.outputs.take_error();
    if let Some(p) = d.stages.packets.as_mut() {
        d.tally.packets_written = p.packets();
        d.tally.output_error = d.tally.output_error.take().or_else(|| p.take_error());
    }
    // The dashboard shows the final state, and answers its requests, until
    // it quits.
    if let Some(dashboard) = d.stages.dashboard.take() {
        dashboard.serve(&d.agg);
    }
    (d.tally, d.agg.snapshot(), d.stages)
}

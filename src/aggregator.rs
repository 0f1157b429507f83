//! The aggregator thread: receives raw packets from the capture thread,
//! parses, filters and aggregates them, writes rows and alerts, and (with
//! the dashboard) publishes views about ten times a second. It owns the
//! aggregator: nothing else touches its state.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::export::alerts::AlertSink;
use crate::export::{IfNames, Row, RowSink};
use crate::view::{self, Meta};
use icmpmon_capture::pipeline::{StopFlag, StopReason};
use icmpmon_capture::SourceCounters;
use icmpmon_core::aggregate::{Aggregator, Config};
use icmpmon_core::event::{IcmpEvent, RawPacket};
use icmpmon_core::filter::Filter;
use icmpmon_core::parse::{parse, ParseError};

/// How often the consumer flushes and checks the clock when idle.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// While packets keep coming, flush at most this often (a write per packet
/// would cost a syscall each under ping-pong traffic).
const BUSY_FLUSH: Duration = Duration::from_millis(100);
/// Dashboard views: at most this often while things change, and once a
/// second when idle (uptime and rates move on).
const VIEW_EVERY: Duration = Duration::from_millis(100);
const VIEW_IDLE: Duration = Duration::from_secs(1);

/// What the consumer saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub packets: u64,
    pub rows: u64,
    /// Well-formed IP packets that are not ICMP (capture files).
    pub not_icmp: u64,
    /// ICMP messages `--filter` left out.
    pub filtered: u64,
    pub parse_errors: BTreeMap<&'static str, u64>,
    pub output_error: Option<anyhow::Error>,
}

impl Tally {
    pub fn parse_error_total(&self) -> u64 {
        self.parse_errors.values().sum()
    }
}

/// Every exporter, fed one row per event, and the alert sink.
pub struct Outputs {
    pub sinks: Vec<Box<dyn RowSink>>,
    pub alerts: Option<AlertSink>,
    pub source: &'static str,
    pub ifnames: IfNames,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("sinks", &self.sinks.len())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Outputs {
    fn write(&mut self, ev: &IcmpEvent, rtt_us: Option<u64>) -> io::Result<()> {
        let row = Row::new(ev, self.source, self.ifnames.get(ev.ifindex), rtt_us);
        self.sinks.iter_mut().try_for_each(|s| s.write_row(&row))
    }

    /// Alerts are written even once rows are not (--count reached).
    fn alerts(&mut self, agg: &mut Aggregator) -> io::Result<()> {
        let flags = agg.take_alerts();
        match &mut self.alerts {
            Some(a) => flags.iter().try_for_each(|f| a.write(f)),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(a) = &mut self.alerts {
            a.flush()?;
        }
        self.sinks.iter_mut().try_for_each(|s| s.flush())
    }
}

/// Where the dashboard's views go, and its filter edits come from.
#[derive(Debug)]
pub struct Dashboard {
    pub views: Sender<icmpmon_tui::View>,
    pub filters: Receiver<String>,
    pub meta: Meta,
    pub counters: SourceCounters,
    pub dropped: Arc<AtomicU64>,
    last: Option<Instant>,
    last_events: u64,
}

impl Dashboard {
    pub fn new(
        views: Sender<icmpmon_tui::View>,
        filters: Receiver<String>,
        meta: Meta,
        counters: SourceCounters,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        Self {
            views,
            filters,
            meta,
            counters,
            dropped,
            last: None,
            last_events: u64::MAX,
        }
    }

    /// Sends a view when one is due; the UI keeps only the newest, so a
    /// full channel just skips this one.
    fn publish(&mut self, agg: &Aggregator, force: bool) {
        let changed = agg.events() != self.last_events;
        let due = self.last.is_none_or(|t| {
            let e = t.elapsed();
            (changed && e >= VIEW_EVERY) || e >= VIEW_IDLE
        });
        if !(due || force) {
            return;
        }
        let lost = self
            .counters
            .stage_losses(self.dropped.load(Relaxed))
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        let view = view::view(&agg.snapshot(), &self.meta, lost);
        // Full: the UI has not taken the last one yet, and will get the
        // next. Disconnected: the UI has gone. Neither is an error.
        let _ = self.views.try_send(view);
        self.last = Some(Instant::now());
        self.last_events = agg.events();
    }
}

/// Wall-clock time in ns since the epoch, the clock of live sources.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The consumer's settings.
#[derive(Debug)]
pub struct Plan<'a> {
    pub filter: Filter,
    pub config: Config,
    pub count: Option<u64>,
    pub deadline: Option<Instant>,
    /// The clock moves on while idle (loss timeouts); for a file, time is
    /// the packets' own.
    pub live: bool,
    pub stop: &'a StopFlag,
}

/// Runs until the capture side hangs up; returns what it saw and the
/// aggregator, for the summary.
pub fn consume(
    rx: &Receiver<Vec<RawPacket>>,
    out: &mut Outputs,
    plan: Plan,
    mut dash: Option<Dashboard>,
) -> (Tally, Aggregator) {
    let Plan {
        mut filter,
        config,
        count,
        deadline,
        live,
        stop,
    } = plan;
    let mut agg = Aggregator::new(config.clone());
    let mut t = Tally::default();
    // Once the output is done (count reached, closed, failed) keep draining
    // so the source can unregister cleanly, but write nothing more.
    let mut writing = true;
    let mut flushed = Instant::now();
    loop {
        let wait = deadline.map_or(IDLE_TICK, |d| {
            d.saturating_duration_since(Instant::now()).min(IDLE_TICK)
        });
        match rx.recv_timeout(wait) {
            Ok(batch) => {
                for raw in batch {
                    t.packets += 1;
                    let ev = match parse(&raw) {
                        Ok(ev) => ev,
                        Err(ParseError::NotIcmp(_)) => {
                            t.not_icmp += 1;
                            continue;
                        }
                        Err(e) => {
                            *t.parse_errors.entry(e.label()).or_default() += 1;
                            continue;
                        }
                    };
                    if !writing {
                        continue;
                    }
                    if !filter.matches(&ev) {
                        t.filtered += 1;
                        continue;
                    }
                    let outcome = agg.ingest(&ev);
                    if let Err(e) = out.write(&ev, outcome.rtt_us) {
                        writing = false;
                        stop.set(StopReason::OutputClosed);
                        // A closed pipe (`| head`) is a normal way to stop.
                        if e.kind() != io::ErrorKind::BrokenPipe {
                            t.output_error = Some(anyhow!(e).context("cannot write output"));
                        }
                        continue;
                    }
                    t.rows += 1;
                    if Some(t.rows) == count {
                        writing = false;
                        stop.set(StopReason::Count);
                    }
                }
                if let Err(e) = out.alerts(&mut agg) {
                    t.output_error
                        .get_or_insert(anyhow!(e).context("cannot write alerts"));
                }
                if writing && rx.is_empty() && flushed.elapsed() >= BUSY_FLUSH {
                    let _ = out.flush();
                    flushed = Instant::now();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if live {
                    agg.tick(now_ns());
                }
                if writing {
                    let _ = out.flush();
                    flushed = Instant::now();
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(d) = dash.as_mut() {
            // A new filter from the dashboard: statistics start afresh
            // under it (the old ones were counted under another).
            let mut force = false;
            while let Ok(text) = d.filters.try_recv() {
                if let Ok(f) = Filter::parse(&text) {
                    filter = f;
                    agg = Aggregator::new(config.clone());
                    d.meta.filter = filter.text().to_string();
                    force = true;
                }
            }
            d.publish(&agg, force);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop.set(StopReason::Duration);
        }
    }
    if live {
        agg.tick(now_ns());
    }
    if let Some(d) = dash.as_mut() {
        d.publish(&agg, true);
    }
    let alerts = out.alerts(&mut agg);
    if let Err(e) = alerts.and_then(|()| out.flush()) {
        if e.kind() != io::ErrorKind::BrokenPipe && t.output_error.is_none() {
            t.output_error = Some(anyhow!(e).context("cannot write output"));
        }
    }
    (t, agg)
}

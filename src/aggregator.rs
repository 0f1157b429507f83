//! The aggregator thread: receives raw packets from the capture thread,
//! parses, filters and aggregates them, writes rows and alerts, and (with
//! the dashboard) publishes views about ten times a second. It owns the
//! aggregator: nothing else touches its state.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use crossbeam_channel::{Receiver, Sender};

use crate::attribution::join::{Join, Ready};
use crate::attribution::{Host, News};
use crate::config::Groups;
use crate::dashboard::view::{self, Meta};
use crate::outputs::alerts::AlertSink;
use crate::outputs::{self, Format, IfNames, Output, Row, RowSink};
use icmpmon_capture::pipeline::{Stop, StopReason};
use icmpmon_capture::source::{stage_losses, Counters};
use icmpmon_core::aggregate::Attribution;
use icmpmon_core::aggregate::Thresholds;
use icmpmon_core::aggregate::{Aggregator, Config, PeerOrder, PeerQuery, Snapshot};
use icmpmon_core::event::{now_ns, IcmpEvent, RawPacket};
use icmpmon_core::filter::Filter;
use icmpmon_core::parse::{parse, ParseError};
use icmpmon_tui::state::SortKey;

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
    /// Socket lookups the host thread made, and /proc scans among them.
    pub lookups: u64,
    pub proc_scans: u64,
}

impl Tally {
    pub fn parse_error_total(&self) -> u64 {
        self.parse_errors.values().sum()
    }
}

/// Every exporter, fed one row per event, and the alert sink.
pub struct Outputs {
    pub sinks: Vec<Box<dyn RowSink>>,
    /// For each sink, its file (reopened on SIGHUP), if it writes to one.
    pub files: Vec<Option<(Format, PathBuf)>>,
    pub alerts: Option<AlertSink>,
    pub alerts_file: Option<PathBuf>,
    pub source: &'static str,
    pub ifnames: IfNames,
    /// Whether an output writes to standard output: its reader going away
    /// (`| head`) must end the run even when nothing is written.
    pub watch_stdout: bool,
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
    fn write(
        &mut self,
        ev: &IcmpEvent,
        rtt_us: Option<u64>,
        who: Option<&Attribution>,
    ) -> io::Result<()> {
        let row = Row::new(ev, self.source, self.ifnames.get(ev.ifindex), rtt_us, who);
        self.sinks.iter_mut().try_for_each(|s| s.write_row(&row))
    }

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

    /// SIGHUP: every file output is flushed and opened again, appending
    /// (after logrotate has moved it away: a new file). Nothing is lost:
    /// the next row goes to the reopened file. A file that cannot be
    /// reopened is reported and written on where it was.
    fn reopen(&mut self) -> io::Result<()> {
        for (sink, file) in self.sinks.iter_mut().zip(&self.files) {
            if let Some((format, path)) = file {
                sink.flush()?;
                match outputs::open(&Output::File(path.clone()), true) {
                    Ok((w, _, empty)) => *sink = outputs::sink(*format, w, empty),
                    Err(e) => eprintln!("icmpmon: SIGHUP: {e}; writing on to the old file"),
                }
            }
        }
        if let (Some(a), Some(path)) = (&mut self.alerts, &self.alerts_file) {
            a.flush()?;
            match outputs::open(&Output::File(path.clone()), true) {
                Ok((w, _, _)) => *a = AlertSink::new(w),
                Err(e) => eprintln!("icmpmon: SIGHUP: {e}; writing on to the old file"),
            }
        }
        Ok(())
    }

    /// Completes the outputs of a run whose source ended well (an empty
    /// CSV still gets its header). A reader that has gone is no error.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        match self.sinks.iter_mut().try_for_each(|s| s.finish()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                Err(anyhow!(e).context("cannot write output"))
            }
            _ => Ok(()),
        }
    }
}

/// What the dashboard asks of the aggregator.
#[derive(Debug, Clone)]
pub enum UiCommand {
    /// A `/` filter for the dashboard's statistics ("" clears it).
    Filter(String),
    /// The peers to put in views: the first `rows` in this order.
    Peers(SortKey, usize),
}

/// Where the dashboard's views go, and its requests come from.
#[derive(Debug)]
pub struct Dashboard {
    pub views: Sender<icmpmon_tui::View>,
    pub commands: Receiver<UiCommand>,
    pub meta: Meta,
    pub counters: Arc<dyn Counters>,
    pub dropped: Arc<AtomicU64>,
    peers: PeerQuery,
    /// The dashboard's own filter and the statistics kept under it, beside
    /// the run's (which rows, alerts and the summary use): clearing it
    /// shows the run's statistics again, untouched.
    view_filter: Option<(Filter, Aggregator)>,
    /// Changes with every new dashboard filter.
    view_generation: u64,
    last: Option<Instant>,
    last_events: u64,
}

impl Dashboard {
    pub fn new(
        views: Sender<icmpmon_tui::View>,
        commands: Receiver<UiCommand>,
        meta: Meta,
        counters: Arc<dyn Counters>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        Self {
            views,
            commands,
            meta,
            counters,
            dropped,
            peers: PeerQuery {
                order: PeerOrder::Requests,
                limit: 200,
            },
            view_filter: None,
            view_generation: 0,
            last: None,
            last_events: u64::MAX,
        }
    }

    /// Sends a view when one is due; the UI keeps only the newest, so a
    /// full channel just skips this one.
    fn publish(&mut self, agg: &Aggregator, force: bool) {
        let agg = self.view_filter.as_ref().map_or(agg, |(_, a)| a);
        let changed = agg.events() != self.last_events;
        let due = self.last.is_none_or(|t| {
            let e = t.elapsed();
            (changed && e >= VIEW_EVERY) || e >= VIEW_IDLE
        });
        if !(due || force) {
            return;
        }
        let lost = stage_losses(&*self.counters, self.dropped.load(Relaxed))
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        let view = view::view(&agg.snapshot_with(self.peers), &self.meta, lost);
        // Full: the UI has not taken the last one yet, and will get the
        // next. Disconnected: the UI has gone. Neither is an error.
        let _ = self.views.try_send(view);
        self.last = Some(Instant::now());
        self.last_events = agg.events();
    }

    /// Takes the dashboard's requests; true when the view must be redone.
    fn take_commands(&mut self, config: &Config, run_filter: &Filter) -> bool {
        let mut changed = false;
        while let Ok(cmd) = self.commands.try_recv() {
            changed = true;
            match cmd {
                UiCommand::Peers(sort, rows) => {
                    self.peers = PeerQuery {
                        order: view::peer_order(sort),
                        limit: rows,
                    };
                }
                UiCommand::Filter(text) if text.trim().is_empty() => {
                    self.view_filter = None;
                    self.meta.filter = run_filter.text().to_string();
                }
                UiCommand::Filter(text) => {
                    if let Ok(f) = Filter::parse(&text) {
                        self.meta.filter = match run_filter.text() {
                            "" => f.text().to_string(),
                            run => format!("{run} (run) and {} (view)", f.text()),
                        };
                        // Counted from now on: what came before was not
                        // kept per event.
                        self.view_filter = Some((f, Aggregator::new(config.clone())));
                        self.view_generation += 1;
                    }
                }
            }
        }
        changed
    }

    /// An event the run's filter let through: also counted under the
    /// dashboard's filter, if any.
    /// Returns the event's number under the dashboard's filter (with the
    /// filter's generation), for its attribution later.
    fn ingest(&mut self, ev: &IcmpEvent) -> Option<(u64, u64)> {
        let (f, a) = self.view_filter.as_mut()?;
        if !f.matches(ev) {
            return None;
        }
        a.ingest(ev);
        a.take_alerts();
        Some((self.view_generation, a.events()))
    }

    fn tick(&mut self, now_ns: u64) {
        if let Some((_, a)) = &mut self.view_filter {
            a.tick(now_ns);
            a.take_alerts();
        }
    }

    /// What attribution found for an event, for the dashboard's filter too.
    /// What attribution found for an event the dashboard's filter took
    /// (`view_seq`, from `ingest`), unless that filter has been replaced.
    fn attributed(&mut self, ev: &IcmpEvent, view_seq: Option<(u64, u64)>, who: &Attribution) {
        if let (Some((_, a)), Some((generation, seq))) = (&mut self.view_filter, view_seq) {
            if generation == self.view_generation {
                a.attributed(ev, Some(seq), who);
            }
        }
    }

    fn kernel_sample(&mut self, s: &icmpmon_core::aggregate::KernelSample) {
        if let Some((_, a)) = &mut self.view_filter {
            a.kernel_sample(s.clone());
            a.take_alerts();
        }
    }
}

/// What a reload may change while running.
#[derive(Debug, Clone)]
pub struct Live {
    pub filter: Filter,
    pub thresholds: Thresholds,
    pub groups: Groups,
}

impl Live {
    pub fn of(args: &crate::cli::RunArgs, groups: Groups) -> Self {
        Self {
            filter: args.filter.clone().unwrap_or_default(),
            thresholds: args.aggregate_config().thresholds,
            groups,
        }
    }
}

/// SIGHUP: new live settings (when --config was read again), and reopen
/// the output files.
#[derive(Debug)]
pub struct Reload {
    pub live: Option<Live>,
}

/// The consumer's settings.
#[derive(Debug)]
pub struct Plan {
    pub filter: Filter,
    pub config: Config,
    pub count: Option<u64>,
    pub deadline: Option<Instant>,
    /// The clock moves on while idle (loss timeouts); for a file, time is
    /// the packets' own.
    pub live: bool,
    pub stop: Stop,
    /// `--metrics-listen`: publishes for the endpoint.
    pub metrics: Option<crate::metrics::Publisher>,
    pub reloads: Receiver<Reload>,
    /// Live sources: the host thread (kernel counters) and whether rows
    /// wait for attribution.
    pub host: Option<Host>,
    pub attribute: bool,
}

/// The run's state of writing: once the output is done (count reached,
/// closed, failed) the consumer keeps draining so the source can
/// unregister cleanly, but writes nothing more.
struct Writer<'a> {
    out: &'a mut Outputs,
    stop: &'a Stop,
    writing: bool,
    error: Option<anyhow::Error>,
}

impl Writer<'_> {
    /// Every output error ends the writing the same way: a closed pipe
    /// (`| head`, EPIPE) is a normal way to stop, anything else is an error.
    fn check(&mut self, r: io::Result<()>, what: &str) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                self.writing = false;
                self.stop.set(StopReason::OutputClosed);
                if e.kind() != io::ErrorKind::BrokenPipe && self.error.is_none() {
                    self.error = Some(anyhow!(e).context(format!("cannot write {what}")));
                }
                false
            }
        }
    }

    /// One row out, with what attribution found for it (counted by the
    /// aggregator whether or not rows are still written).
    fn emit(
        &mut self,
        t: &mut Tally,
        agg: &mut Aggregator,
        dash: Option<&mut Dashboard>,
        r: Ready,
        count: Option<u64>,
    ) {
        let Ready {
            ev,
            rtt_us,
            seq,
            view_seq,
            who,
        } = r;
        if let Some(a) = &who {
            agg.attributed(&ev, Some(seq), a);
            if let Some(d) = dash {
                d.attributed(&ev, view_seq, a);
            }
        }
        if !self.writing {
            return;
        }
        let written = self.out.write(&ev, rtt_us, who.as_ref());
        if !self.check(written, "output") {
            return;
        }
        t.rows += 1;
        if Some(t.rows) == count {
            self.writing = false;
            self.stop.set(StopReason::Count);
        }
    }

    fn flush(&mut self) {
        if self.writing {
            let r = self.out.flush();
            self.check(r, "output");
        }
        if self.writing && self.out.watch_stdout && stdout_reader_gone() {
            self.check(Err(io::ErrorKind::BrokenPipe.into()), "output");
        }
    }
}

/// True when standard output is a pipe or socket whose reader has gone
/// (poll reports POLLERR on such a write end), found without writing.
fn stdout_reader_gone() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let stdout = io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

/// What the consumer woke up for.
enum Got {
    Batch(Vec<RawPacket>),
    News(News),
    /// The host thread ended (it only does when told to, or failing).
    NewsGone,
    Idle,
    Closed,
}

/// Runs until the capture side hangs up; returns what it saw and the final
/// snapshot, for the summary. A panic here stops the run (the capture side
/// sees `stop`, and the receiver's drop).
pub fn consume(
    rx: Receiver<Vec<RawPacket>>,
    mut out: Outputs,
    plan: Plan,
    mut dash: Option<Dashboard>,
) -> (Tally, Snapshot, Outputs) {
    let Plan {
        mut filter,
        config,
        count,
        mut deadline,
        live,
        stop,
        mut metrics,
        reloads,
        host,
        attribute,
    } = plan;
    let _stop_on_panic = stop.on_panic(StopReason::Failed);
    let mut agg = Aggregator::new(config.clone());
    let mut t = Tally::default();
    let mut w = Writer {
        out: &mut out,
        stop: &stop,
        writing: true,
        error: None,
    };
    let mut news = host
        .as_ref()
        .map_or_else(crossbeam_channel::never, |h| h.news.clone());
    let mut join = host
        .as_ref()
        .filter(|_| attribute)
        .map(|h| Join::new(h.asks.clone()));
    let mut flushed = Instant::now();
    let mut ticked = Instant::now();
    // Rows taken so far: --count stops taking at once, even while rows
    // still wait for attribution.
    let mut taken = 0u64;
    loop {
        let mut wake = Instant::now() + IDLE_TICK;
        for d in [deadline, join.as_ref().and_then(Join::deadline)]
            .into_iter()
            .flatten()
        {
            wake = wake.min(d);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        let got = crossbeam_channel::select! {
            recv(rx) -> m => m.map_or(Got::Closed, Got::Batch),
            recv(news) -> n => n.map_or(Got::NewsGone, Got::News),
            default(wait) => Got::Idle,
        };
        let (idle, closed) = (matches!(got, Got::Idle), matches!(got, Got::Closed));
        match got {
            Got::Batch(batch) => {
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
                    if !w.writing || count.is_some_and(|c| taken >= c) {
                        continue;
                    }
                    if !filter.matches(&ev) {
                        t.filtered += 1;
                        continue;
                    }
                    taken += 1;
                    let outcome = agg.ingest(&ev);
                    let view_seq = dash.as_mut().and_then(|d| d.ingest(&ev));
                    let r = Ready {
                        ev,
                        rtt_us: outcome.rtt_us,
                        seq: agg.events(),
                        view_seq,
                        who: None,
                    };
                    match join.as_mut() {
                        Some(j) => j.push(r),
                        None => w.emit(&mut t, &mut agg, dash.as_mut(), r, count),
                    }
                }
                // Alerts are written even once rows are not (--count).
                let alerts = w.out.alerts(&mut agg);
                w.check(alerts, "alerts");
                if rx.is_empty() && flushed.elapsed() >= BUSY_FLUSH {
                    w.flush();
                    flushed = Instant::now();
                }
            }
            Got::News(News::Answer(k, a)) => {
                if let Some(j) = join.as_mut() {
                    j.answer(k, a);
                }
            }
            Got::News(News::Kernel(sample)) => {
                if let Some(d) = dash.as_mut() {
                    d.kernel_sample(&sample);
                }
                agg.kernel_sample(sample);
                let alerts = w.out.alerts(&mut agg);
                w.check(alerts, "alerts");
            }
            Got::NewsGone => news = crossbeam_channel::never(),
            Got::Idle | Got::Closed => {}
        }
        if let Some(j) = join.as_mut() {
            for r in j.ready(false) {
                w.emit(&mut t, &mut agg, dash.as_mut(), r, count);
            }
        }
        // By the clock, not only when idle: a stream of answers must not
        // hold rows unflushed or loss timeouts back.
        if ticked.elapsed() >= IDLE_TICK || idle {
            if live {
                let now = now_ns();
                agg.tick(now);
                if let Some(d) = dash.as_mut() {
                    d.tick(now);
                }
            }
            w.flush();
            flushed = Instant::now();
            ticked = Instant::now();
        }
        if closed {
            break;
        }
        if let Some(d) = dash.as_mut() {
            let force = d.take_commands(&config, &filter);
            d.publish(&agg, force);
        }
        while let Ok(r) = reloads.try_recv() {
            if let Some(live) = r.live {
                filter = live.filter;
                agg.set_thresholds(live.thresholds);
                agg.set_groups(live.groups);
            }
            if w.writing {
                let r = w.out.reopen();
                w.check(r, "the reopened output");
            }
        }
        if let Some(m) = metrics.as_mut() {
            m.publish(&agg, false);
        }
        // Once: then the capture side winds down, and this loop waits for
        // it without a deadline.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop.set(StopReason::Duration);
            deadline = None;
        }
    }
    // Rows still waiting get their answers if they come in time.
    if let Some(j) = join.as_mut() {
        while let Some(d) = j.deadline() {
            // A timeout lets the front row go; the rows behind keep their
            // own time.
            match news.recv_deadline(d) {
                Ok(News::Answer(k, a)) => j.answer(k, a),
                Ok(News::Kernel(s)) => agg.kernel_sample(s),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            for r in j.ready(false) {
                w.emit(&mut t, &mut agg, dash.as_mut(), r, count);
            }
        }
        for r in j.ready(true) {
            w.emit(&mut t, &mut agg, dash.as_mut(), r, count);
        }
    }
    // The thread's waits and sends fail once every sender of asks and
    // every receiver of news has gone: it ends.
    drop(join);
    drop(news);
    if let Some(h) = host {
        use std::sync::atomic::Ordering::Relaxed;
        let work = h.work.clone();
        h.stop();
        t.lookups = work.lookups.load(Relaxed);
        t.proc_scans = work.scans.load(Relaxed);
    }
    if live {
        agg.tick(now_ns());
    }
    if let Some(d) = dash.as_mut() {
        d.publish(&agg, true);
    }
    if let Some(m) = metrics.as_mut() {
        m.publish(&agg, true);
    }
    let alerts = w.out.alerts(&mut agg);
    w.check(alerts, "alerts");
    w.flush();
    t.output_error = w.error.take();
    let writing = w.writing;
    if !writing {
        // Nothing more goes out (--count, or the output is closed).
        out.sinks.clear();
    }
    (t, agg.snapshot(), out)
}

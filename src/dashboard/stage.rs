//! The dashboard as a stage of the aggregator thread: it publishes views
//! about ten times a second while things change (once a second when idle),
//! and takes the dashboard's requests (peer order, the `/` filter).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use icmpmon_capture::source::{stage_losses, Counters};
use icmpmon_core::aggregate::{Aggregator, Config, PeerOrder, PeerQuery};
use icmpmon_core::event::IcmpEvent;
use icmpmon_core::filter::Filter;
use icmpmon_tui::state::SortKey;

use super::view::{self, Meta};
use crate::pipeline::stage::{Flow, Record, Stage, Tick};

/// Messages kept for a new `/` filter to count from (the newest).
const SEEN: usize = 65_536;
/// Views at most this often while things change, and once a second when
/// idle (uptime and rates move on).
const VIEW_EVERY: Duration = Duration::from_millis(100);
const VIEW_IDLE: Duration = Duration::from_secs(1);

/// What the dashboard asks of the aggregator thread.
#[derive(Debug, Clone)]
pub(crate) enum UiCommand {
    /// A `/` filter for the dashboard's statistics ("" clears it).
    Filter(String),
    /// The peers to put in views: the first `rows` in this order.
    Peers(SortKey, usize),
}

/// Where the dashboard's views go, and its requests come from.
#[derive(Debug)]
pub(crate) struct Dashboard {
    views: Sender<icmpmon_tui::View>,
    /// The same channel's other end: a view the UI has not taken yet is
    /// replaced by a newer one, so the last view is always the final state.
    unshown: Receiver<icmpmon_tui::View>,
    commands: Receiver<UiCommand>,
    meta: Meta,
    counters: Arc<dyn Counters>,
    dropped: Arc<AtomicU64>,
    peers: PeerQuery,
    /// The aggregator's settings, for the filtered statistics.
    config: Config,
    /// The run's filter (rows, alerts and the summary use it; with the
    /// dashboard, SIGHUP stops the run rather than reloading it).
    run_filter: String,
    /// The dashboard's own filter and the statistics kept under it, beside
    /// the run's: clearing it shows the run's statistics again, untouched.
    view_filter: Option<(Filter, Aggregator)>,
    /// The newest messages the run kept (at most `SEEN`), which a new `/`
    /// filter counts first: it applies to what was already seen.
    seen: VecDeque<IcmpEvent>,
    /// Messages the run kept, seen or not.
    kept: u64,
    /// Changes with every new dashboard filter.
    view_generation: u64,
    /// The run's clocks (`Aggregator::set_clocks`), for the filtered
    /// statistics: their timeouts count as the run's do.
    clocks: (u64, u64),
    /// Events the filtered statistics took whose rows have not come yet:
    /// (number in the run's aggregator, filter generation, number in the
    /// filtered one), in capture order, as rows come.
    awaiting_rows: VecDeque<(u64, u64, u64)>,
    last: Option<Instant>,
    last_events: u64,
    /// Set once the capture ended (`serve`).
    ended: Option<String>,
}

impl Dashboard {
    pub fn new(
        (views, unshown): (Sender<icmpmon_tui::View>, Receiver<icmpmon_tui::View>),
        commands: Receiver<UiCommand>,
        meta: Meta,
        counters: Arc<dyn Counters>,
        dropped: Arc<AtomicU64>,
        config: Config,
    ) -> Self {
        Self {
            views,
            unshown,
            commands,
            run_filter: meta.filter.clone(),
            meta,
            counters,
            dropped,
            peers: PeerQuery {
                order: PeerOrder::Requests,
                limit: 200,
            },
            config,
            view_filter: None,
            seen: VecDeque::new(),
            kept: 0,
            view_generation: 0,
            clocks: (0, u64::MAX),
            awaiting_rows: VecDeque::new(),
            last: None,
            last_events: u64::MAX,
            ended: None,
        }
    }

    /// Sends a view when one is due, in place of one the UI has not taken.
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
        let mut view = view::view(&agg.snapshot_with(self.peers), &self.meta, lost);
        view.ended.clone_from(&self.ended);
        // Full: the UI has not taken the last one; the newer one replaces
        // it (dropping it would leave an old view for good once the run
        // ends). Disconnected: the UI has gone, no error.
        while let Err(TrySendError::Full(v)) = self.views.try_send(view) {
            let _ = self.unshown.try_recv();
            view = v;
        }
        self.last = Some(Instant::now());
        self.last_events = agg.events();
    }

    /// Takes the dashboard's requests; true when the view must be redone.
    fn take_commands(&mut self) -> bool {
        let mut changed = false;
        while let Ok(cmd) = self.commands.try_recv() {
            self.apply(cmd);
            changed = true;
        }
        changed
    }

    /// After the capture ended: the final view stays, marked so, and the
    /// dashboard's requests (a `/` filter, another order) are still
    /// answered from the final state until it quits (its requests' channel
    /// closes). The view goes out again once a second: a paused dashboard
    /// takes none, and must get the final one when it resumes.
    pub fn serve(mut self, agg: &Aggregator) {
        self.ended = Some("no more packets".into());
        self.publish(agg, true);
        loop {
            match self.commands.recv_timeout(VIEW_IDLE) {
                Ok(cmd) => self.apply(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.take_commands();
            self.publish(agg, true);
        }
    }

    fn apply(&mut self, cmd: UiCommand) {
        match cmd {
            UiCommand::Peers(sort, rows) => {
                self.peers = PeerQuery {
                    order: view::peer_order(sort),
                    limit: rows,
                };
            }
            UiCommand::Filter(text) if text.trim().is_empty() => {
                self.view_filter = None;
                self.meta.filter = self.run_filter.clone();
            }
            UiCommand::Filter(text) => {
                if let Ok(f) = Filter::parse(&text) {
                    // What was already seen first (the newest `SEEN`
                    // messages; said when older ones are left out).
                    let mut a = Aggregator::new(self.config.clone());
                    a.set_clocks(self.clocks.0, self.clocks.1);
                    for ev in self.seen.iter().filter(|ev| f.matches(ev)) {
                        a.ingest(ev);
                    }
                    a.take_alerts();
                    let since = match self.kept > self.seen.len() as u64 {
                        true => format!(", over the last {} messages", self.seen.len()),
                        false => String::new(),
                    };
                    self.meta.filter = match self.run_filter.as_str() {
                        "" => format!("{}{since}", f.text()),
                        run => format!("{run} (run) and {} (view{since})", f.text()),
                    };
                    self.view_filter = Some((f, a));
                    self.view_generation += 1;
                }
            }
        }
    }
}

impl Stage for Dashboard {
    fn on_record(&mut self, record: &Record, agg: &Aggregator) -> Flow {
        self.clocks = agg.clocks();
        if let Record::Event { ev, .. } = record {
            if self.seen.len() == SEEN {
                self.seen.pop_front();
            }
            self.seen.push_back((*ev).clone());
            self.kept += 1;
        }
        let Some((f, a)) = self.view_filter.as_mut() else {
            self.awaiting_rows.clear();
            return Flow::Go;
        };
        match record {
            // Also counted under the dashboard's filter, if it takes it.
            Record::Event { ev, seq, .. } if f.matches(ev) => {
                a.set_clocks(self.clocks.0, self.clocks.1);
                a.ingest(ev);
                a.take_alerts();
                self.awaiting_rows
                    .push_back((*seq, self.view_generation, a.events()));
            }
            // What attribution found, for the filtered statistics too,
            // unless that filter has been replaced since.
            Record::Row(r) => {
                while self.awaiting_rows.front().is_some_and(|w| w.0 < r.seq) {
                    self.awaiting_rows.pop_front();
                }
                if self.awaiting_rows.front().is_some_and(|w| w.0 == r.seq) {
                    let (_, generation, view_seq) = self.awaiting_rows.pop_front().unwrap();
                    if let (Some(who), true) = (&r.who, generation == self.view_generation) {
                        a.attributed(&r.ev, Some(view_seq), who);
                    }
                }
            }
            Record::Kernel(s) => {
                a.kernel_sample((*s).clone());
                a.take_alerts();
            }
            _ => {}
        }
        Flow::Go
    }

    fn on_tick(&mut self, tick: Tick, agg: &Aggregator) -> Flow {
        if let (Some(now), Some((_, a))) = (tick.clock_ns, &mut self.view_filter) {
            self.clocks = agg.clocks();
            a.set_clocks(self.clocks.0, self.clocks.1);
            a.tick(now);
            a.take_alerts();
        }
        let force = self.take_commands();
        self.publish(agg, force);
        Flow::Go
    }

    fn finish(&mut self, agg: &Aggregator) -> Flow {
        self.publish(agg, true);
        Flow::Go
    }
}

//! The run's threads: capture → bounded channel → the aggregator thread,
//! and the dashboard on the calling thread (or a wait for both).

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread;

use anyhow::{anyhow, Context};

use crate::dashboard::view::Meta;
use crate::dashboard::{Dashboard, UiCommand};
use crate::metrics::Publisher;
use crate::outputs::{Outputs, PacketFile};
use crate::pipeline::{self, Plan, Stages, Tally};
use crate::stderr::say;
use icmpmon_capture::pipeline::{self as channel, Stop, StopReason};
use icmpmon_capture::source::{Counters, Source, SourceEnd};
use icmpmon_core::aggregate::Snapshot;
use icmpmon_core::filter::Filter;

/// What a finished run hands to the summary.
pub(super) struct Finished {
    pub(super) end: anyhow::Result<SourceEnd>,
    /// The dashboard's own end (a terminal that failed).
    pub(super) ui: anyhow::Result<()>,
    /// Completing the row outputs.
    pub(super) finish: anyhow::Result<()>,
    pub(super) tally: Tally,
    pub(super) snapshot: Snapshot,
    pub(super) counters: Arc<dyn Counters>,
    pub(super) dropped: u64,
}

/// The run's threads: capture → bounded channel → the aggregator thread,
/// and the dashboard on this thread (`ui`) or a wait for both. Every thread
/// ends through `plan.stop`; a panicking thread sets it too, so the others
/// still wind down (and the firewall rules are removed) before the error
/// is reported.
pub(super) fn execute(
    source: Box<dyn Source>,
    (outputs, packets, metrics): (Outputs, Option<PacketFile>, Option<Publisher>),
    plan: Plan,
    capacity: usize,
    ui: Option<Meta>,
) -> anyhow::Result<Finished> {
    let stop = plan.stop.clone();
    let counters = source.counters();
    // A file's reader waits for the consumer: a deep queue would only hold
    // packets in memory, not absorb bursts.
    let capacity = if source.live() {
        capacity
    } else {
        capacity.min(8)
    };
    let (sink, rx, dropped) = channel::channel(capacity);
    let mut metrics = metrics;
    if let Some(m) = metrics.as_mut() {
        m.set_losses(counters.clone(), dropped.clone());
    }
    let (end, consumed, shown) = thread::scope(|scope| -> anyhow::Result<_> {
        let capture = thread::Builder::new()
            .name("capture".into())
            .spawn_scoped(scope, {
                let stop = stop.clone();
                move || {
                    let _stop_on_panic = stop.on_panic(StopReason::Failed);
                    // Returning drops the sink, which ends the consumer's loop.
                    source.run(sink, &stop)
                }
            })
            .context("cannot start the capture thread")?;
        let mut views = None;
        let dashboard = ui.map(|meta| {
            let (view_tx, view_rx) = crossbeam_channel::bounded(1);
            let (command_tx, command_rx) = crossbeam_channel::unbounded();
            views = Some((view_rx.clone(), command_tx));
            Dashboard::new(
                (view_tx, view_rx),
                command_rx,
                meta,
                counters.clone(),
                dropped.clone(),
                plan.config.clone(),
            )
        });
        let stages = Stages {
            outputs,
            packets,
            metrics,
            dashboard,
        };
        let aggregator = thread::Builder::new()
            .name("aggregator".into())
            .spawn_scoped(scope, move || pipeline::run(rx, stages, plan));
        let aggregator = match aggregator {
            Ok(a) => a,
            Err(e) => {
                stop.set(StopReason::Failed);
                return Err(anyhow!(e).context("cannot start the aggregator thread"));
            }
        };
        let shown = match views {
            Some((view_rx, filter_tx)) => {
                let shown = show_dashboard(&view_rx, filter_tx, &stop);
                drop(view_rx);
                shown
            }
            None => Ok(()),
        };
        let consumed = aggregator.join();
        let end = capture.join();
        Ok((end, consumed, shown))
    })?;
    let (tally, snapshot, mut stages) =
        consumed.map_err(|_| anyhow!("the aggregator thread panicked"))?;
    let end = end
        .map_err(|_| anyhow!("the capture thread panicked"))
        .and_then(|r| r.map_err(anyhow::Error::from));
    let finished = match &end {
        Ok(_) => stages.outputs.complete(),
        Err(_) => Ok(()),
    };
    Ok(Finished {
        end,
        ui: shown,
        finish: finished,
        tally,
        snapshot,
        counters,
        dropped: dropped.load(Relaxed),
    })
}

/// Runs the dashboard on this thread until the user quits (or a signal,
/// --count or --duration stops the run), then stops the capture.
pub(super) fn show_dashboard(
    views: &crossbeam_channel::Receiver<icmpmon_tui::View>,
    commands: crossbeam_channel::Sender<UiCommand>,
    stop: &Stop,
) -> anyhow::Result<()> {
    // A panic here must still stop the capture and aggregator threads,
    // which the scope waits for before the panic goes on.
    let _stop_on_panic = stop.on_panic(StopReason::Failed);
    let ui_stop = stop.clone();
    let peers = commands.clone();
    let controls = icmpmon_tui::Controls {
        validate: Box::new(|s| Filter::parse(s).map(drop).map_err(|e| e.to_string())),
        apply_filter: Box::new(move |f| {
            let _ = commands.send(UiCommand::Filter(f));
        }),
        request_peers: Box::new(move |sort, rows| {
            let _ = peers.send(UiCommand::Peers(sort, rows));
        }),
        should_exit: Box::new(move || ui_stop.is_set()),
    };
    let shown = icmpmon_tui::run(views, controls);
    match shown {
        // The terminal hung up: like SIGHUP, a way to stop.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            stop.set(StopReason::Hangup);
            say!("icmpmon: {e}; stopping");
            Ok(())
        }
        other => {
            stop.set(StopReason::Quit);
            other.context("the dashboard failed")
        }
    }
}

/// Whole runs in-process with a fake source: the shutdown paths.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use icmpmon_core::batch::Batch;
    use icmpmon_core::event::{Direction, RawPacket};

    use std::time::Instant;

    use super::*;
    use crate::outputs::{Opened, Row, RowSink};
    use icmpmon_capture::pipeline::PacketSink;

    /// What the fake source does until (and after) the stop.
    #[derive(Debug, Clone, Copy)]
    enum Behaviour {
        /// Echo requests as fast as the channel takes them, never waiting.
        Flood,
        /// Nothing; after the stop, `linger` before returning.
        Idle { linger: Duration },
        /// `n` echo requests, then the end of the source.
        Few(u16),
    }

    #[derive(Debug)]
    struct Fake(Behaviour);

    #[derive(Debug, Default)]
    struct NoCounters;

    impl Counters for NoCounters {
        fn fields(&self) -> Vec<(&'static str, u64)> {
            vec![]
        }
        fn losses(&self) -> Vec<(&'static str, u64)> {
            vec![]
        }
    }

    /// Adds an IPv4 echo request 10.0.0.1 → 10.0.0.2 to `batch`.
    fn echo_request(seq: u16, batch: &mut Batch) {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[8, 0, 0, 0, 0, 7]);
        p.extend_from_slice(&seq.to_be_bytes());
        batch.push(RawPacket {
            drop: None,
            ts_ns: 1,
            mono_ns: None,
            direction: Direction::Out,
            ifindex: 0,
            orig_len: 28,
            data: &p,
        });
    }

    impl Source for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn describe(&self) -> String {
            "fake".into()
        }
        fn counters(&self) -> Arc<dyn Counters> {
            Arc::new(NoCounters)
        }
        fn run(
            self: Box<Self>,
            sink: PacketSink,
            stop: &Stop,
        ) -> Result<SourceEnd, icmpmon_capture::source::CaptureError> {
            match self.0 {
                Behaviour::Flood => {
                    let mut seq = 0u16;
                    while !stop.is_set() {
                        let mut batch = sink.batch();
                        for _ in 0..64 {
                            seq = seq.wrapping_add(1);
                            echo_request(seq, &mut batch);
                        }
                        sink.send(batch);
                    }
                }
                Behaviour::Idle { linger } => {
                    let _ = stop.stopped().recv();
                    thread::sleep(linger);
                }
                Behaviour::Few(n) => {
                    let mut batch = sink.batch();
                    for seq in 0..n {
                        echo_request(seq, &mut batch);
                    }
                    sink.send(batch);
                    return Ok(SourceEnd::Ended("the end".into()));
                }
            }
            Ok(SourceEnd::Stopped)
        }
    }

    /// Counts rows; panics at row `panic_at`, fails to write row
    /// `fail_at`.
    struct Rows {
        n: Arc<AtomicU64>,
        panic_at: Option<u64>,
        fail_at: Option<u64>,
    }

    impl RowSink for Rows {
        fn write_row(&mut self, _: &Row) -> io::Result<()> {
            let n = self.n.fetch_add(1, Ordering::SeqCst) + 1;
            assert!(Some(n) != self.panic_at, "test: a panic in the writer");
            if Some(n) == self.fail_at {
                return Err(io::Error::other("test: disk full"));
            }
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn outputs(
        n: &Arc<AtomicU64>,
        (panic_at, fail_at): (Option<u64>, Option<u64>),
        count: Option<u64>,
        stop: &Stop,
    ) -> Outputs {
        let opened = Opened {
            sinks: vec![Box::new(Rows {
                n: Arc::clone(n),
                panic_at,
                fail_at,
            })],
            files: vec![None],
            alerts: None,
            alerts_file: None,
            watch_stdout: false,
        };
        Outputs::new(opened, "fake", count, stop).unwrap()
    }

    fn plan(stop: &Stop, count: Option<u64>, duration: Option<Duration>) -> Plan {
        Plan {
            filter: Filter::default(),
            config: icmpmon_core::aggregate::Config::default(),
            count,
            deadline: duration.map(|d| Instant::now() + d),
            live: true,
            stop: stop.clone(),
            reloads: crossbeam_channel::never(),
            host: None,
            attribute: false,
        }
    }

    /// Runs `execute` on a thread; fails the test instead of hanging.
    fn run_bounded(source: Behaviour, outputs: Outputs, plan: Plan) -> anyhow::Result<Finished> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        thread::spawn(move || {
            let _ = tx.send(execute(
                Box::new(Fake(source)),
                (outputs, None, None),
                plan,
                16,
                None,
            ));
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the run did not end: a wait ignores the stop")
    }

    /// CPU time (ticks) of this process's threads named `name`.
    fn thread_ticks(name: &str) -> u64 {
        let mut sum = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the ")" of comm: utime and stime are 14 and 15.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            sum += f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0);
        }
        sum
    }

    /// The run ended on the writer thread's panic, as failed.
    fn assert_writer_panicked(done: Finished, stop: &Stop) {
        let err = done
            .tally
            .output_error
            .expect("a panicking writer is an error");
        assert!(
            format!("{err:#}").contains("writer thread panicked"),
            "{err:#}"
        );
        assert_eq!(stop.reason(), Some(StopReason::Failed));
    }

    /// One test, so that no other run's threads share the names measured.
    #[test]
    fn every_stop_path_ends_the_run() {
        // A panic in the writer thread, under a flood: the run ends and
        // says so.
        let stop = Stop::new().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let done = run_bounded(
            Behaviour::Flood,
            outputs(&n, (Some(5), None), None, &stop),
            plan(&stop, None, None),
        )
        .unwrap();
        assert_writer_panicked(done, &stop);

        // --count stops a flood that never pauses.
        let stop = Stop::new().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let done = run_bounded(
            Behaviour::Flood,
            outputs(&n, (None, None), Some(10), &stop),
            plan(&stop, Some(10), None),
        )
        .unwrap();
        assert_eq!(done.tally.rows, 10);
        assert_eq!(n.load(Ordering::SeqCst), 10);
        assert_eq!(stop.reason(), Some(StopReason::Count));
        assert!(matches!(done.end, Ok(SourceEnd::Stopped)));

        // A stop from outside (a signal) ends a flood.
        let stop = Stop::new().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let stopper = {
            let stop = stop.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                stop.set(StopReason::Signal);
            })
        };
        let done = run_bounded(
            Behaviour::Flood,
            outputs(&n, (None, None), None, &stop),
            plan(&stop, None, None),
        )
        .unwrap();
        stopper.join().unwrap();
        assert!(done.tally.rows > 0);
        assert_eq!(stop.reason(), Some(StopReason::Signal));

        // A source that ends with fewer rows than a batch: every row is
        // written at the end.
        let stop = Stop::new().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let done = run_bounded(
            Behaviour::Few(5),
            outputs(&n, (None, None), None, &stop),
            plan(&stop, None, None),
        )
        .unwrap();
        assert_eq!((done.tally.rows, n.load(Ordering::SeqCst)), (5, 5));
        assert!(done.tally.output_error.is_none());

        // The writer panics on the last rows, handed over at the end: the
        // run still ends (no wait for an answer that never comes).
        let stop = Stop::new().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let done = run_bounded(
            Behaviour::Few(5),
            outputs(&n, (Some(5), None), None, &stop),
            plan(&stop, None, None),
        )
        .unwrap();
        assert_writer_panicked(done, &stop);

        // --count reached, and one of the last rows failed to be written:
        // the failure is still the run's.
        let stop = Stop::new().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let done = run_bounded(
            Behaviour::Flood,
            outputs(&n, (None, Some(8)), Some(10), &stop),
            plan(&stop, Some(10), None),
        )
        .unwrap();
        let err = done
            .tally
            .output_error
            .expect("the failed write is an error");
        assert!(format!("{err:#}").contains("disk full"), "{err:#}");
        assert_eq!(done.tally.rows, 7);

        // --duration: the run ends, and while the source winds down the
        // aggregator waits instead of spinning.
        let stop = Stop::new().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let linger = Duration::from_millis(800);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let p = plan(&stop, None, Some(Duration::from_millis(50)));
        let o = outputs(&n, (None, None), None, &stop);
        thread::spawn(move || {
            let _ = tx.send(execute(
                Box::new(Fake(Behaviour::Idle { linger })),
                (o, None, None),
                p,
                16,
                None,
            ));
        });
        thread::sleep(Duration::from_millis(200));
        let before = thread_ticks("aggregator");
        thread::sleep(Duration::from_millis(400));
        let spent = thread_ticks("aggregator") - before;
        let done = rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
        assert!(matches!(done.end, Ok(SourceEnd::Stopped)));
        assert_eq!(stop.reason(), Some(StopReason::Duration));
        // 400 ms of spinning would be about 40 ticks.
        assert!(
            spent <= 5,
            "the aggregator used {spent} ticks while waiting"
        );
    }
}

//! The row outputs' own thread. The aggregator thread hands it rows in
//! batches and it formats and writes them: on a capture file, formatting
//! was a quarter of the aggregator thread's time, which this thread now
//! spends beside it. It flushes, reopens (SIGHUP) and ends when told, in
//! the order it is told, so a row never goes to a file opened after a
//! later one's.
//!
//! It is started by the aggregator side once the process is confined
//! (sandbox, no capability, its user): it inherits all of that.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use icmpmon_capture::pipeline::{Stop, StopReason};

use super::file::{open, sink, Format, Output};
use super::row::{IfNames, Row, RowSink};
use crate::attribution::join::Ready;
use crate::stderr::say;

/// Rows the aggregator side gathers before it hands them over (sooner on
/// a flush): a wake-up of this thread per few hundred rows, not per row.
pub(super) const BATCH_ROWS: usize = 512;

/// Batches on their way: the aggregator side waits beyond these, as it
/// waited on a slow write before (the capture side never does).
const IN_FLIGHT: usize = 4;

/// What the thread is told, in order.
enum Job {
    Rows(Vec<Ready>),
    /// Flush every output; the answer once done.
    Flush(Sender<()>),
    /// SIGHUP: flush, then open every file output again.
    Reopen,
    /// The last job. `complete`: the outputs are completed (an empty CSV
    /// gets its header, every output is flushed), else only dropped.
    End {
        complete: bool,
    },
}

/// What the thread tells the aggregator side without being asked.
#[derive(Debug, Default)]
struct Shared {
    /// Rows written (accepted by every output).
    rows: AtomicU64,
    /// Set once a write failed or the thread panicked: nothing more is
    /// written.
    failed: AtomicBool,
    /// The failure, and what was being written, until taken.
    error: Mutex<Option<(io::Error, &'static str)>>,
}

/// The aggregator side's handle on the thread.
pub(super) struct Writer {
    jobs: Option<Sender<Job>>,
    /// Emptied batches, given back.
    spare: Receiver<Vec<Ready>>,
    /// Disconnected once the thread has ended.
    gone: Receiver<()>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("rows", &self.shared.rows.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// The outputs the thread owns.
pub(super) struct Sinks {
    pub sinks: Vec<Box<dyn RowSink>>,
    /// For each sink, its file (reopened on SIGHUP), if it writes to one.
    pub files: Vec<Option<(Format, PathBuf)>>,
    pub source: &'static str,
}

impl Writer {
    /// A panic in the thread stops the run (`stop`) and is the outputs'
    /// failure.
    pub fn start(sinks: Sinks, stop: &Stop) -> io::Result<Self> {
        let (jobs, jobs_rx) = crossbeam_channel::bounded(IN_FLIGHT);
        let (spare_tx, spare) = crossbeam_channel::bounded(IN_FLIGHT + 1);
        let (alive, gone) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new().name("writer".into()).spawn({
            let shared = shared.clone();
            let stop = stop.clone();
            move || {
                // Gone when the thread ends, even by a panic: a wait for
                // an answer ends then too.
                let _alive = alive;
                let mut w = Thread {
                    sinks,
                    ifnames: IfNames::default(),
                    shared,
                    writing: true,
                };
                // Dropped before `w`: a panic stops the run as failed
                // before the outputs' failure is published (which the
                // aggregator side would take for a closed output).
                let _stop_on_panic = stop.on_panic(StopReason::Failed);
                let complete = w.serve(&jobs_rx, &spare_tx);
                w.end(complete)
            }
        })?;
        Ok(Self {
            jobs: Some(jobs),
            spare,
            gone,
            shared,
            thread: Some(thread),
        })
    }

    /// An empty batch, reused when one has come back.
    pub fn batch(&self) -> Vec<Ready> {
        self.spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH_ROWS))
    }

    fn send(&self, job: Job) {
        // Gone only if the thread panicked: `end` says so.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    pub fn rows(&self, batch: Vec<Ready>) {
        self.send(Job::Rows(batch));
    }

    /// Flushes every output; `wait`: until done, so the rows written and
    /// any failure are known.
    pub fn flush(&self, wait: bool) {
        let (done, answer) = crossbeam_channel::bounded(1);
        self.send(Job::Flush(done));
        if wait {
            // A thread that panicked answers nothing: the wait ends when
            // it has gone.
            crossbeam_channel::select! {
                recv(answer) -> _ => {}
                recv(self.gone) -> _ => {}
            }
        }
    }

    pub fn reopen(&self) {
        self.send(Job::Reopen);
    }

    /// Rows written so far.
    pub fn written(&self) -> u64 {
        self.shared.rows.load(Relaxed)
    }

    /// The first failure, once: the outputs write nothing more.
    pub fn failure(&self) -> Option<(io::Error, &'static str)> {
        if !self.shared.failed.load(Relaxed) {
            return None;
        }
        self.shared.error.lock().ok()?.take()
    }

    /// Ends the thread once it has done what it was told before; see
    /// `Job::End`.
    pub fn end(&mut self, complete: bool) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.send(Job::End { complete });
        self.jobs = None;
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")))
    }
}

impl Drop for Writer {
    /// Rows handed over are written before the run reports them.
    fn drop(&mut self) {
        let _ = self.end(false);
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.check(
                Err(io::Error::other("the writer thread panicked")),
                "output",
            );
        }
    }
}

/// The thread's own state.
struct Thread {
    sinks: Sinks,
    ifnames: IfNames,
    shared: Arc<Shared>,
    /// Cleared at the first failure.
    writing: bool,
}

impl Thread {
    /// Does the jobs until the last; returns whether to complete the
    /// outputs (not when the aggregator side went without saying).
    fn serve(&mut self, jobs: &Receiver<Job>, spare: &Sender<Vec<Ready>>) -> bool {
        for job in jobs {
            match job {
                Job::Rows(mut rows) => {
                    if self.writing {
                        let r = self.write(&rows);
                        self.check(r, "output");
                    }
                    rows.clear();
                    let _ = spare.try_send(rows);
                }
                Job::Flush(done) => {
                    if self.writing {
                        let r = self.sinks.sinks.iter_mut().try_for_each(|s| s.flush());
                        self.check(r, "output");
                    }
                    let _ = done.send(());
                }
                Job::Reopen => {
                    if self.writing {
                        let r = self.reopen();
                        self.check(r, "the reopened output");
                    }
                }
                Job::End { complete } => return complete,
            }
        }
        false
    }

    fn write(&mut self, rows: &[Ready]) -> io::Result<()> {
        let Sinks { sinks, source, .. } = &mut self.sinks;
        for r in rows {
            let row = Row::new(
                &r.ev,
                source,
                self.ifnames.get(r.ev.ifindex),
                r.rtt_us,
                r.who.as_ref(),
            );
            sinks.iter_mut().try_for_each(|s| s.write_row(&row))?;
            self.shared.rows.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// A failure ends the writing; the aggregator side finds it.
    fn check(&mut self, r: io::Result<()>, what: &'static str) {
        if let Err(e) = r {
            self.writing = false;
            if let Ok(mut slot) = self.shared.error.lock() {
                slot.get_or_insert((e, what));
            }
            self.shared.failed.store(true, Relaxed);
        }
    }

    /// Every file output is flushed and opened again, appending (after
    /// logrotate has moved it away: a new file). Nothing is lost: the next
    /// row goes to the reopened file. A file that cannot be reopened is
    /// reported and written on where it was. (`files` holds the regular
    /// files only: a FIFO or a device is kept as it is.)
    fn reopen(&mut self) -> io::Result<()> {
        let Sinks { sinks, files, .. } = &mut self.sinks;
        for (s, file) in sinks.iter_mut().zip(files.iter()) {
            if let Some((format, path)) = file {
                s.flush()?;
                match open(&Output::File(path.clone()), true) {
                    Ok((w, _, empty)) => *s = sink(*format, w, empty),
                    Err(e) => say!("icmpmon: SIGHUP: {e}; writing on to the old file"),
                }
            }
        }
        Ok(())
    }

    /// Completes the outputs, or only drops them (their buffers are
    /// written out as they go, errors unseen: as when --count ends a run).
    fn end(&mut self, complete: bool) -> io::Result<()> {
        if !(complete && self.writing) {
            return Ok(());
        }
        let r = self.sinks.sinks.iter_mut().try_for_each(|s| s.finish());
        self.sinks.sinks.clear();
        r
    }
}

//! The outputs as a stage of the aggregator thread: one row per message
//! to every row output (formatted and written by the writer thread), the
//! alerts, flushes by the clock, reopening on SIGHUP. Once the output is
//! done (--count reached, closed, failed) it writes nothing more, and the
//! run stops.

use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use icmpmon_capture::pipeline::{Stop, StopReason};
use icmpmon_core::aggregate::Aggregator;

use super::alerts::AlertSink;
use super::file::{open, Format, Output};
use super::row::RowSink;
use super::writer::{Sinks, Writer, BATCH_ROWS};
use crate::attribution::join::Ready;
use crate::config::Live;
use crate::pipeline::stage::{Flow, Record, Stage, Tick};
use crate::stderr::say;

/// While packets keep coming, flush at most this often (a write per packet
/// would cost a syscall each under ping-pong traffic).
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Every row output, fed one row per message, and the alert output.
pub(crate) struct Outputs {
    /// None without a row output (the dashboard alone).
    writer: Option<Writer>,
    /// Rows not yet handed to the writer.
    batch: Vec<Ready>,
    alerts: Option<AlertSink>,
    alerts_file: Option<PathBuf>,
    /// Whether an output writes to standard output: its reader going away
    /// (`| head`) must end the run even when nothing is written.
    watch_stdout: bool,
    /// --count: rows to write.
    count: Option<u64>,
    /// Rows handed to the writer, or to be.
    taken: u64,
    /// Cleared once the output is done (count reached, closed, failed).
    writing: bool,
    error: Option<anyhow::Error>,
    flushed: Instant,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("writer", &self.writer)
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

/// What `Outputs::new` takes: the opened outputs of a run.
pub(crate) struct Opened {
    pub sinks: Vec<Box<dyn RowSink>>,
    pub files: Vec<Option<(Format, PathBuf)>>,
    pub alerts: Option<AlertSink>,
    pub alerts_file: Option<PathBuf>,
    pub watch_stdout: bool,
}

impl Outputs {
    /// Starts the writer thread: call once the process is confined.
    pub fn new(
        opened: Opened,
        source: &'static str,
        count: Option<u64>,
        stop: &Stop,
    ) -> anyhow::Result<Self> {
        let Opened {
            sinks,
            files,
            alerts,
            alerts_file,
            watch_stdout,
        } = opened;
        let writer = (!sinks.is_empty())
            .then(|| {
                Writer::start(
                    Sinks {
                        sinks,
                        files,
                        source,
                    },
                    stop,
                )
            })
            .transpose()
            .map_err(|e| anyhow!(e).context("cannot start the writer thread"))?;
        Ok(Self {
            batch: writer.as_ref().map(Writer::batch).unwrap_or_default(),
            writer,
            alerts,
            alerts_file,
            watch_stdout,
            count,
            taken: 0,
            writing: true,
            error: None,
            flushed: Instant::now(),
        })
    }

    /// Whether rows are still written: once not, the aggregator thread
    /// takes no more messages (it drains, so the source can stop cleanly).
    pub fn writing(&self) -> bool {
        self.writing
    }

    /// Rows written (taken, without a row output).
    pub fn rows(&self) -> u64 {
        self.writer.as_ref().map_or(self.taken, Writer::written)
    }

    /// The first output error (a closed pipe is none: a way to stop).
    pub fn take_error(&mut self) -> Option<anyhow::Error> {
        self.error.take()
    }

    /// Completes the outputs of a run whose source ended well (an empty
    /// CSV still gets its header); nothing once the output is done. A
    /// reader that has gone is no error.
    pub fn complete(&mut self) -> anyhow::Result<()> {
        let Some(w) = self.writer.as_mut().filter(|_| self.writing) else {
            return Ok(());
        };
        match w.end(true) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                Err(anyhow!(e).context("cannot write output"))
            }
            _ => Ok(()),
        }
    }

    /// Every output error ends the writing the same way: a closed pipe
    /// (`| head`, EPIPE) is a normal way to stop, anything else an error.
    fn check(&mut self, r: io::Result<()>, what: &str) -> Flow {
        match r {
            Ok(()) => Flow::Go,
            Err(e) => {
                self.writing = false;
                if e.kind() != io::ErrorKind::BrokenPipe && self.error.is_none() {
                    self.error = Some(anyhow!(e).context(format!("cannot write {what}")));
                }
                Flow::Stop(StopReason::OutputClosed)
            }
        }
    }

    /// A row for the writer thread (counted alone without a row output).
    fn write(&mut self, r: &Ready) -> Flow {
        if self.writer.is_some() {
            self.batch.push(r.clone());
        }
        self.taken += 1;
        if Some(self.taken) == self.count {
            self.hand_over();
            self.writing = false;
            return Flow::Stop(StopReason::Count);
        }
        if self.batch.len() >= BATCH_ROWS {
            self.hand_over();
            return self.writer_failed();
        }
        Flow::Go
    }

    /// The rows gathered go to the writer thread.
    fn hand_over(&mut self) {
        if let Some(w) = &self.writer {
            if !self.batch.is_empty() {
                let next = w.batch();
                w.rows(std::mem::replace(&mut self.batch, next));
            }
        }
    }

    /// The writer thread's failure, once found, ends the writing.
    fn writer_failed(&mut self) -> Flow {
        match self.writer.as_ref().and_then(Writer::failure) {
            Some((e, what)) => {
                self.batch.clear();
                self.check(Err(e), what)
            }
            None => Flow::Go,
        }
    }

    /// `wait`: until the writer thread has flushed (the run's end: the
    /// rows written and any failure are then known).
    fn flush(&mut self, wait: bool) -> Flow {
        self.flushed = Instant::now();
        if !self.writing {
            return Flow::Go;
        }
        let r = self.alerts.as_mut().map_or(Ok(()), AlertSink::flush);
        let flow = self.check(r, "output");
        if flow != Flow::Go {
            return flow;
        }
        let flow = self.flush_rows(wait);
        if flow == Flow::Go && self.watch_stdout && stdout_reader_gone() {
            return self.check(Err(io::ErrorKind::BrokenPipe.into()), "output");
        }
        flow
    }

    /// Hands the rows taken to the writer thread and has it flush them
    /// (`wait`: until done); its failure, if it has one.
    fn flush_rows(&mut self, wait: bool) -> Flow {
        self.hand_over();
        if let Some(w) = &self.writer {
            w.flush(wait);
        }
        self.writer_failed()
    }

    /// SIGHUP: every file output is flushed and opened again, appending
    /// (after logrotate has moved it away: a new file); the row outputs by
    /// the writer thread, after the rows before. A file that cannot be
    /// reopened is reported and written on where it was.
    fn reopen(&mut self) -> io::Result<()> {
        self.hand_over();
        if let Some(w) = &self.writer {
            w.reopen();
        }
        if let (Some(a), Some(path)) = (&mut self.alerts, &self.alerts_file) {
            a.flush()?;
            match open(&Output::File(path.clone()), true) {
                Ok((w, _, _)) => *a = AlertSink::new(w),
                Err(e) => say!("icmpmon: SIGHUP: {e}; writing on to the old file"),
            }
        }
        Ok(())
    }
}

impl Stage for Outputs {
    fn on_record(&mut self, record: &Record, _agg: &Aggregator) -> Flow {
        match record {
            Record::Row(r) if self.writing => self.write(r),
            // Written even once rows are not (--count).
            Record::Alerts(flags) => {
                let written = match &mut self.alerts {
                    Some(a) => flags.iter().try_for_each(|f| a.write(f)),
                    None => Ok(()),
                };
                self.check(written, "alerts")
            }
            _ => Flow::Go,
        }
    }

    fn on_tick(&mut self, tick: Tick, _agg: &Aggregator) -> Flow {
        if tick.idle || tick.now.saturating_duration_since(self.flushed) >= FLUSH_EVERY {
            return self.flush(false);
        }
        Flow::Go
    }

    fn on_reload(&mut self, _live: Option<&Live>) -> Flow {
        if !self.writing {
            return Flow::Go;
        }
        let r = self.reopen();
        self.check(r, "the reopened output")
    }

    fn finish(&mut self, _agg: &Aggregator) -> Flow {
        let flow = self.flush(true);
        if self.writing {
            return flow;
        }
        // The writing stopped (--count, a closed output, a failed write):
        // the rows taken before still go out and are flushed (a failure
        // found now is still the run's), then nothing more.
        let last = self.flush_rows(true);
        let ended = self.writer.as_mut().map_or(Ok(()), |w| w.end(false));
        let ended = self.check(ended, "output");
        [flow, last, ended]
            .into_iter()
            .find(|f| *f != Flow::Go)
            .unwrap_or(Flow::Go)
    }
}

impl Drop for Outputs {
    /// A run that ends without `finish` (the aggregator thread panicked):
    /// the rows taken still go out, before the writer thread ends.
    fn drop(&mut self) {
        self.hand_over();
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

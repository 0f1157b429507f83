//! The outputs as a stage of the aggregator thread: one row per message
//! to every row output, the alerts, flushes by the clock, reopening on
//! SIGHUP. Once the output is done (--count reached, closed, failed) it
//! writes nothing more, and the run stops.

use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use icmpmon_capture::pipeline::StopReason;
use icmpmon_core::aggregate::Aggregator;

use super::alerts::AlertSink;
use super::file::{open, sink, Format, Output};
use super::row::{IfNames, Row, RowSink};
use crate::attribution::join::Ready;
use crate::config::Live;
use crate::pipeline::stage::{Flow, Record, Stage, Tick};
use crate::stderr::say;

/// While packets keep coming, flush at most this often (a write per packet
/// would cost a syscall each under ping-pong traffic).
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Every row output, fed one row per message, and the alert output.
pub(crate) struct Outputs {
    sinks: Vec<Box<dyn RowSink>>,
    /// For each sink, its file (reopened on SIGHUP), if it writes to one.
    files: Vec<Option<(Format, PathBuf)>>,
    alerts: Option<AlertSink>,
    alerts_file: Option<PathBuf>,
    source: &'static str,
    ifnames: IfNames,
    /// Whether an output writes to standard output: its reader going away
    /// (`| head`) must end the run even when nothing is written.
    watch_stdout: bool,
    /// --count: rows to write.
    count: Option<u64>,
    rows: u64,
    /// Cleared once the output is done (count reached, closed, failed).
    writing: bool,
    error: Option<anyhow::Error>,
    flushed: Instant,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("sinks", &self.sinks.len())
            .field("source", &self.source)
            .field("rows", &self.rows)
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
    pub fn new(opened: Opened, source: &'static str, count: Option<u64>) -> Self {
        let Opened {
            sinks,
            files,
            alerts,
            alerts_file,
            watch_stdout,
        } = opened;
        Self {
            sinks,
            files,
            alerts,
            alerts_file,
            source,
            ifnames: IfNames::default(),
            watch_stdout,
            count,
            rows: 0,
            writing: true,
            error: None,
            flushed: Instant::now(),
        }
    }

    /// Whether rows are still written: once not, the aggregator thread
    /// takes no more messages (it drains, so the source can stop cleanly).
    pub fn writing(&self) -> bool {
        self.writing
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The first output error (a closed pipe is none: a way to stop).
    pub fn take_error(&mut self) -> Option<anyhow::Error> {
        self.error.take()
    }

    /// Completes the outputs of a run whose source ended well (an empty
    /// CSV still gets its header); nothing once the output is done. A
    /// reader that has gone is no error.
    pub fn complete(&mut self) -> anyhow::Result<()> {
        if !self.writing {
            return Ok(());
        }
        match self.sinks.iter_mut().try_for_each(|s| s.finish()) {
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

    fn write(&mut self, r: &Ready) -> Flow {
        let row = Row::new(
            &r.ev,
            self.source,
            self.ifnames.get(r.ev.ifindex),
            r.rtt_us,
            r.who.as_ref(),
        );
        let written = self.sinks.iter_mut().try_for_each(|s| s.write_row(&row));
        let flow = self.check(written, "output");
        if flow != Flow::Go {
            return flow;
        }
        self.rows += 1;
        if Some(self.rows) == self.count {
            self.writing = false;
            return Flow::Stop(StopReason::Count);
        }
        Flow::Go
    }

    fn flush(&mut self) -> Flow {
        self.flushed = Instant::now();
        if !self.writing {
            return Flow::Go;
        }
        let mut r = self.alerts.as_mut().map_or(Ok(()), AlertSink::flush);
        if r.is_ok() {
            r = self.sinks.iter_mut().try_for_each(|s| s.flush());
        }
        let flow = self.check(r, "output");
        if flow == Flow::Go && self.watch_stdout && stdout_reader_gone() {
            return self.check(Err(io::ErrorKind::BrokenPipe.into()), "output");
        }
        flow
    }

    /// SIGHUP: every file output is flushed and opened again, appending
    /// (after logrotate has moved it away: a new file). Nothing is lost:
    /// the next row goes to the reopened file. A file that cannot be
    /// reopened is reported and written on where it was. (`files` holds
    /// the regular files only: a FIFO or a device is kept as it is.)
    fn reopen(&mut self) -> io::Result<()> {
        for (s, file) in self.sinks.iter_mut().zip(&self.files) {
            if let Some((format, path)) = file {
                s.flush()?;
                match open(&Output::File(path.clone()), true) {
                    Ok((w, _, empty)) => *s = sink(*format, w, empty),
                    Err(e) => say!("icmpmon: SIGHUP: {e}; writing on to the old file"),
                }
            }
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
            return self.flush();
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
        let flow = self.flush();
        if !self.writing {
            // Nothing more goes out (--count, or the output is closed).
            self.sinks.clear();
        }
        flow
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

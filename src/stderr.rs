//! Every line icmpmon writes to standard error goes through here, so that a
//! reader that has gone (`2>&1 | head`: EPIPE) is treated as for standard
//! output: no error, no panic, and the run stops cleanly (exit 0). Other
//! write errors on stderr are ignored: there is nowhere left to report them.
//! (Log lines, `-v` and warnings, go through tracing-subscriber, which
//! ignores write errors too, but they do not stop the run.)

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

use icmpmon_capture::pipeline::{Stop, StopReason};

/// The run to stop when stderr's reader goes away (set once a run starts).
static RUN: OnceLock<Stop> = OnceLock::new();

/// Makes a closed stderr stop this run, as a closed stdout does.
pub(crate) fn stop_on_close(stop: &Stop) {
    let _ = RUN.set(stop.clone());
}

/// Writes `args` to stderr as it is (`line`: with a newline).
pub(crate) fn write(args: fmt::Arguments, line: bool) {
    let mut err = io::stderr().lock();
    let written = err
        .write_fmt(args)
        .and_then(|()| if line { err.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = written {
        if e.kind() == io::ErrorKind::BrokenPipe {
            if let Some(stop) = RUN.get() {
                stop.set(StopReason::OutputClosed);
            }
        }
    }
}

/// `eprintln!` through `write`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stderr::write(format_args!($($arg)*), true)
    };
}

/// `eprint!` through `write`.
macro_rules! say_text {
    ($($arg:tt)*) => {
        $crate::stderr::write(format_args!($($arg)*), false)
    };
}

pub(crate) use {say, say_text};

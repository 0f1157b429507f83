//! `--alerts`: one JSON object per raised anomaly flag.

use std::io::{self, Write};

use serde::Serialize;

use super::cells::rfc3339_nanos;
use icmpmon_core::aggregate::{Flag, FlagKind};

#[derive(Serialize)]
struct AlertLine<'a> {
    timestamp: String,
    flag: FlagKind,
    subject: &'a str,
    detail: &'a str,
}

pub struct AlertSink {
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for AlertSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertSink")
    }
}

impl AlertSink {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }

    pub fn write(&mut self, f: &Flag) -> io::Result<()> {
        let line = AlertLine {
            timestamp: rfc3339_nanos(f.first_ns),
            flag: f.flag,
            subject: &f.subject,
            detail: &f.detail,
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

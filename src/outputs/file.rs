//! Where rows go: standard output or a file (created, or appended to when
//! reopened after log rotation), in one of the row formats.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use super::csv::CsvExport;
use super::jsonl::JsonlExport;
use super::row::RowSink;
use crate::privsep::files::Mode;

/// Where an output goes.
pub use crate::cli::Output;

/// A row format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "CSV",
            Format::Jsonl => "JSON lines",
        }
    }
}

/// Opens an output: standard output, or a file created empty or (`append`,
/// a reopen after log rotation) appended to. Returns the writer, its name,
/// and whether it starts empty.
pub fn open(out: &Output, append: bool) -> io::Result<(Box<dyn Write + Send>, String, bool)> {
    Ok(match out {
        Output::Stdout => (
            Box::new(BufWriter::new(io::stdout())),
            "stdout".into(),
            true,
        ),
        Output::File(path) => {
            let f = if append {
                crate::privsep::files::open(path, Mode::Append)
            } else {
                File::create(path)
            }
            .map_err(|e| {
                let verb = if append { "reopen" } else { "create" };
                io::Error::new(e.kind(), format!("cannot {verb} {}: {e}", path.display()))
            })?;
            let empty = f.metadata().map_or(true, |m| m.len() == 0);
            (
                Box::new(BufWriter::new(f)),
                path.display().to_string(),
                empty,
            )
        }
    })
}

/// A row exporter writing to `w`; a CSV that does not start empty (a
/// reopened file) gets no second header.
pub fn sink(format: Format, w: Box<dyn Write + Send>, empty: bool) -> Box<dyn RowSink> {
    match format {
        Format::Csv => Box::new(CsvExport::new(w, empty)),
        Format::Jsonl => Box::new(JsonlExport::new(w)),
    }
}

/// Whether the output at `path`, just opened, is reopened on SIGHUP (log
/// rotation): a regular file. A FIFO, a device or a terminal
/// (`/dev/stderr`) is not: its writer is kept. Asked at start, while this
/// process may still look at it.
pub(crate) fn rotates(path: &std::path::Path) -> bool {
    !matches!(std::fs::metadata(path), Ok(m) if !m.is_file())
}

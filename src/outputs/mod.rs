//! Headless outputs: rows (CSV, JSON lines) and alerts, to standard output
//! or files.

pub(crate) mod alerts;
mod csv;
mod file;
mod jsonl;
mod row;

pub(crate) use file::{open, sink, Format, Output};
pub(crate) use row::{rfc3339_nanos, IfNames, Row, RowSink};

//! Headless outputs: rows (CSV, JSON lines) and alerts, to standard output
//! or files: the stage of the aggregator thread that hands them on, and
//! the writer thread that formats and writes the rows.

pub(crate) mod alerts;
mod cells;
mod csv;
mod file;
mod jsonl;
mod packets;
mod row;
mod stage;
mod writer;

pub(crate) use cells::rfc3339_nanos;
pub(crate) use file::{open, rotates, sink, Format};
pub(crate) use packets::PacketFile;
pub(crate) use row::{open_name_socket, RowSink};
#[cfg(test)]
pub(crate) use row::{Row, HEADER};
pub(crate) use stage::{Opened, Outputs};

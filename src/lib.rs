//! The icmpmon program as a library, so that tests can drive whole runs:
//! the command line (`cli`, `config`), the run's wiring, signals and exit
//! status (`app`), the aggregator thread and the `Stage` trait of what it
//! feeds (`pipeline`): row and alert outputs (`outputs`), the metrics
//! endpoint (`metrics`) and the dashboard (`dashboard`); the summary
//! (`report`). The `attribution` thread names the local processes behind
//! flows and reads the kernel's ICMP counters. Standard error is written
//! through `stderr` only (a closed one is not an error).

#![deny(clippy::print_stderr)]

mod app;
mod attribution;
mod cli;
mod config;
mod dashboard;
mod metrics;
mod outputs;
mod pipeline;
mod privsep;
mod report;
mod stderr;

pub use app::main;

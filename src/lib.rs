//! The icmpmon program as a library, so that tests can drive whole runs:
//! the command line (`cli`, `config`), the run's wiring, signals and exit
//! status (`app`), the aggregator thread (`aggregator`), and what it feeds:
//! row and alert outputs (`outputs`), the metrics endpoint (`metrics`), the
//! dashboard's views (`dashboard`) and the summary (`report`). The
//! `attribution` thread names the local processes behind flows and reads
//! the kernel's ICMP counters.

mod aggregator;
mod app;
mod attribution;
mod cli;
mod config;
mod dashboard;
mod metrics;
mod outputs;
mod report;

pub use app::main;

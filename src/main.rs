//! The icmpmon program: command line, run wiring, the aggregator thread and
//! the outputs (rows, alerts, summary, dashboard views).

mod aggregator;
mod app;
mod cli;
mod config;
mod export;
mod host;
mod metrics;
mod report;
mod view;

fn main() -> std::process::ExitCode {
    app::main()
}

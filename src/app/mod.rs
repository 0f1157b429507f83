//! The program: its entry and subcommands (`entry`), one run's wiring
//! (`run`), its signals (`signals`), SIGHUP reloads (`reload`), its threads
//! (`threads`) and the summary at the end (`summary`).

mod entry;
mod reload;
mod run;
mod signals;
mod summary;
mod threads;

pub use entry::main;

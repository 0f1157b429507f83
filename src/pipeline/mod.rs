//! The aggregator thread (`driver`) and the one trait its front ends
//! implement (`stage`): capture → bounded channel → this thread, which
//! owns the aggregator → outputs, metrics, dashboard. Stages import
//! `stage` itself: the driver depends on them.

mod driver;
pub(crate) mod stage;

pub(crate) use driver::{run, Plan, Stages, Tally};

//! The dashboard's side in this crate: turning snapshots into the views
//! `icmpmon-tui` draws (`view`), and the stage of the aggregator thread
//! that publishes them and takes the dashboard's requests (`stage`).

mod stage;
pub(crate) mod view;

pub(crate) use stage::{Dashboard, UiCommand};

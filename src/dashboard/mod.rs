//! The dashboard's side in this crate: turning snapshots into the views
//! `icmpmon-tui` draws.

pub(crate) mod view;

//! Terminal dashboard for icmpmon. It owns its view model (`model`) and
//! depends on ratatui/crossterm only, never on the capture code: the
//! icmpmon crate maps its aggregator snapshots into `View`s and feeds them
//! through a channel.
//!
//! - `model`: what a frame shows;
//! - `keys`: key → action tables (also the help overlay's content);
//! - `state`: what the user did, and how an action changes it (pure);
//! - `render`: one pure function per panel;
//! - `input`: terminal bytes → keys, one read path that cannot spin;
//! - `term`: the terminal runtime (raw mode, event loop, restore).

mod input;
pub mod keys;
pub mod model;
pub mod render;
pub mod state;
pub mod term;

pub use model::View;
pub use term::{restore, run, Controls};

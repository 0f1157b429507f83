//! Pure rendering: each panel is a function of (frame, area, what to show).
//! Nothing here reads the terminal or the clock, so `TestBackend`
//! snapshots are exact.

mod overlays;
mod panels;
mod screen;
mod style;

pub use overlays::{detail, filter_error, help, message};
pub use panels::{alerts, events, footer, header, hurt, peers, rates, types};
pub use screen::{draw, too_small};
pub use style::{duration_us, rate_text, Ctx, Theme, MIN_HEIGHT, MIN_WIDTH};

//! The metrics endpoint (`--metrics-listen`): the aggregator thread
//! publishes a copy of what it counts about once a second (`Publisher`);
//! the HTTP thread (`http`) encodes the newest copy on a scrape. Neither
//! waits for the other beyond swapping one pointer, and capture never
//! waits for either.
//!
//! Series are bounded: per-peer labels only for `--metrics-peers` pairs,
//! the rest summed in one `other` pair.

mod encode;
pub(crate) mod http;
mod publish;

pub(crate) use publish::{Publisher, Shared};

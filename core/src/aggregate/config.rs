//! The aggregator's limits and thresholds.

use super::anomaly::Thresholds;
use super::groups::Groups;

/// Limits and thresholds; `Config::default()` suits a busy host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// An echo request unanswered this long is lost.
    pub echo_timeout_ns: u64,
    pub max_pending: usize,
    pub max_peers: usize,
    pub max_flows: usize,
    pub max_reporters: usize,
    /// Counters of the top-talkers sketch (heavy hitters above
    /// events/`top_k` are exact to within the sketch's error).
    pub top_k: usize,
    /// Distinct type/code pairs with their own rates (the rest: "other").
    pub max_kinds: usize,
    pub recent_events: usize,
    pub recent_errors: usize,
    pub thresholds: Thresholds,
    /// Peer groups by prefix (`--config`'s `[peer-groups]`).
    pub groups: Groups,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            echo_timeout_ns: 2_000_000_000,
            max_pending: 65_536,
            max_peers: 4096,
            max_flows: 4096,
            max_reporters: 1024,
            top_k: 1024,
            max_kinds: 64,
            recent_events: 1000,
            recent_errors: 256,
            thresholds: Thresholds::default(),
            groups: Groups::default(),
        }
    }
}

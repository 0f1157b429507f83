//! The aggregate state of a run: echo pairing (RTT, loss), errors per flow
//! and reporter, rates, top talkers, anomaly flags, who got hurt, the
//! kernel's counters and the path-MTU map, in bounded tables. `Aggregator`
//! owns them all; `Snapshot` is what front ends read.
//!
//! The submodules are private: what other crates use is re-exported here.

mod addr;
mod aggregator;
mod anomaly;
mod config;
mod drops;
mod echo;
mod errors;
mod flow;
mod groups;
mod kernel;
mod mtu;
mod owners;
mod pending;
mod rates;
mod recall;
mod recent;
mod rtt;
mod slab;
mod snapshot;
mod topk;

pub use aggregator::{Aggregator, Outcome};
pub use aggregator::{ErrorKindKey, KindKey, MessageCount};
pub use anomaly::{Flag, FlagKind, Thresholds};
pub use config::Config;
pub use drops::{DropRow, MAX_REASONS, OTHER_REASON};
pub use echo::{Departed, PeerCounts, PeerKey};
pub use flow::{error_class, is_error, kinds_text, FlowKey};
pub use groups::{GroupPair, Groups};
pub use kernel::{KernelSample, SYSCTLS};
pub use mtu::PathMtu;
pub use owners::{cgroup_path, Attribution, Owner};
pub use recent::RecentEvent;
pub use rtt::{Histogram, RttSummary, BUCKETS_US, HISTORY};
pub use snapshot::{PeerOrder, PeerQuery, Snapshot};

//! Passive capture through the netfilter log (nfnetlink_log): icmpmon's own
//! rules (`rules`) copy each ICMP packet to its log groups at the module's
//! hooks (prerouting = `in`, forwarded included; output = `out`), after
//! defragmentation. Traffic never waits for icmpmon; without it, the rules
//! log nothing.
//!
//! Two groups: `in` packets go to group N, batched (a message per
//! `threshold` packets or per `timeout`), and carry the kernel's receive
//! timestamp. NFLOG stamps nothing at output, so an `out` packet's time is
//! when icmpmon receives it; group N+1 sends those one at a time, so that
//! the time is the send time plus a wake-up (tens of µs), not plus a batch
//! timeout. Under a flood (over 8 000 `out` packets/s) per-packet messages
//! would cost half the flood's rate, so the `out` group then batches what
//! arrives in 250 µs: an `out` time is late by a wake-up (tens of µs), by
//! at most 250 µs under a flood, and, for the last packets of a burst, by
//! up to the kernel's 10 ms timer. Both groups number their packets
//! (NFULA_SEQ): a gap is a batch the socket could not take (ENOBUFS), and
//! its size is counted lost once a later packet shows it. At the end, rule
//! hits minus packets seen and counted is what vanished without a gap
//! (the tail of a loss, or a buffer the kernel could not allocate).
//!
//! The two groups' batches come at their own times, so a packet waits
//! (`order`) until the other group's packets the hooks logged before it
//! have come (both groups carry the namespace's global log sequence): an
//! echo reply goes on after the request it answers, unless the request's
//! batch was lost or the kernel sent it later than the wait allows.
//!
//! Config messages come from `netlink-packet-netfilter`. Packets are parsed
//! here with `NlasIterator`, as for NFQUEUE: that crate's packet header and
//! timestamp have private fields, and one bad attribute fails its whole
//! message.

mod counters;
mod group;
mod order;
mod packet;
mod source;

pub use counters::NflogCounters;
pub(crate) use group::out_batch_message;
pub use source::{
    NflogError, NflogOptions, NflogSource, DEFAULT_GROUP, THRESHOLD_DEFAULT, TIMEOUT_MS_DEFAULT,
};

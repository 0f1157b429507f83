//! icmpmon's model, free of I/O and privileges: what a captured packet is
//! (`event`), the reused batches packets travel in (`batch`), the one
//! ICMP/ICMPv6 parser (`parse`), the `--filter` language (`filter`) and
//! the aggregator that owns every statistic
//! (`aggregate`). Sources live in `icmpmon-capture`, front ends in the
//! `icmpmon` binary and `icmpmon-tui`.

pub mod aggregate;
pub mod batch;
pub mod event;
pub mod filter;
pub mod parse;

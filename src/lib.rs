//! icmpmon: a Linux ICMP/ICMPv6 monitor.
//!
//! Data flow: a source (`capture`) yields `RawPacket`s into a bounded
//! channel (`pipeline`); the consumer parses them (`parse`) into
//! `IcmpEvent`s and exports rows (`export`). See DESIGN.md.

pub mod aggregate;
pub mod app;
pub mod capture;
pub mod cli;
pub mod consume;
pub mod dashboard;
pub mod event;
pub mod export;
pub mod filter;
pub mod netlink;
pub mod parse;
pub mod pipeline;
pub mod privilege;
pub mod proto;
pub mod report;

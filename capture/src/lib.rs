//! Packet sources. Each yields `RawPacket`s (bytes from the IP header on)
//! into a `PacketSink` (`pipeline`); none of them parses ICMP (that is
//! `icmpmon_core::parse`'s job). `source` is what a source is to the rest
//! of icmpmon, `open` which sources exist and the `auto` policy. Also here:
//! the netlink helpers the kernel sources share, the firewall rules of
//! NFLOG and NFQUEUE (`rules`) and the capability drop (`privilege`).

pub mod bpf;
pub mod clock;
pub mod kmod;
mod netlink;
pub mod nflog;
pub mod nfqueue;
pub mod open;
pub mod packet;
pub mod pcap;
pub mod pipeline;
pub mod privilege;
pub mod privileged;
pub mod rules;
pub mod source;

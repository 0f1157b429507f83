//! Packet sources. Each yields `RawPacket`s (bytes from the IP header on)
//! into a `PacketSink` (`pipeline`); none of them parses ICMP (that is
//! `icmpmon_core::parse`'s job). Also here: the netlink helpers the kernel
//! sources share, and the capability drop (`privilege`).

pub mod kmod;
mod netlink;
pub mod nflog;
pub mod nfqueue;
pub mod packet;
pub mod pcap;
pub mod pipeline;
pub mod privilege;
pub mod rules;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::pipeline::{PacketSink, Stop};

/// How a source's capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEnd {
    /// The run was stopped (Ctrl-C, --count, --duration) and the source
    /// shut down cleanly.
    Stopped,
    /// The source ended on its own; the text says why.
    Ended(String),
}

/// An opened source, ready to run on the capture thread. The binary only
/// sees this trait, so tests can drive a whole run with a fake.
pub trait Source: Send + std::fmt::Debug {
    /// The CSV `source` column.
    fn name(&self) -> &'static str;
    /// For the start-up line and the dashboard header.
    fn describe(&self) -> String;
    /// Capabilities the source still needs once open (see `privilege`).
    fn capabilities_kept(&self) -> &'static [caps::Capability] {
        &[]
    }
    /// Whether time moves on between packets (a live capture) rather than
    /// being the packets' own (a file).
    fn live(&self) -> bool {
        true
    }
    fn counters(&self) -> Arc<dyn Counters>;
    /// Captures into `sink` until `stop` (or its own end).
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> anyhow::Result<SourceEnd>;
}

/// A running source's counters, for the summary and the dashboard.
pub trait Counters: Send + Sync + std::fmt::Debug {
    /// Every counter, for the machine-readable summary.
    fn fields(&self) -> Vec<(&'static str, u64)>;
    /// Where packets can be lost before the channel, in pipeline order.
    fn losses(&self) -> Vec<(&'static str, u64)>;
}

/// Packets lost per pipeline stage: the source's own stages, then the
/// capture → aggregator channel (`channel` dropped there).
pub fn stage_losses(counters: &dyn Counters, channel: u64) -> Vec<(&'static str, u64)> {
    let mut v = counters.losses();
    v.push(("channel", channel));
    v
}

impl Source for kmod::KmodSource {
    fn name(&self) -> &'static str {
        "kmod"
    }
    fn describe(&self) -> String {
        format!(
            "kmod (generic netlink family icmpmon, id {})",
            self.family_id()
        )
    }
    // The module's CLOSE needs no capability: it can only end the caller's
    // own subscription.
    fn counters(&self) -> Arc<dyn Counters> {
        self.counters()
    }
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> anyhow::Result<SourceEnd> {
        Ok(kmod::KmodSource::run(*self, sink, stop)?)
    }
}

impl Counters for kmod::KmodCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("records", self.records.load(Relaxed)),
            ("batches", self.batches.load(Relaxed)),
            ("kernel_lost", self.kernel_lost.load(Relaxed)),
            ("missing_batches", self.missing_batches.load(Relaxed)),
            ("socket_overruns", self.socket_overruns.load(Relaxed)),
            ("bad_batches", self.bad_batches.load(Relaxed)),
            ("bad_messages", self.bad_messages.load(Relaxed)),
        ]
    }
    fn losses(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("kernel", self.kernel_lost.load(Relaxed)),
            ("missing_batches", self.missing_batches.load(Relaxed)),
            ("socket_overruns", self.socket_overruns.load(Relaxed)),
        ]
    }
}

impl Source for nfqueue::NfqueueSource {
    fn name(&self) -> &'static str {
        "nfqueue"
    }
    fn describe(&self) -> String {
        self.describe()
    }
    /// NFQUEUE messages need CAP_NET_ADMIN; so does removing the rules.
    fn capabilities_kept(&self) -> &'static [caps::Capability] {
        &[
            caps::Capability::CAP_NET_ADMIN,
            caps::Capability::CAP_NET_RAW,
        ]
    }
    fn counters(&self) -> Arc<dyn Counters> {
        self.counters()
    }
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> anyhow::Result<SourceEnd> {
        Ok(nfqueue::NfqueueSource::run(*self, sink, stop)?)
    }
}

impl Counters for nfqueue::NfqCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("queued", self.packets.load(Relaxed)),
            ("queue_lost", self.queue_lost.load(Relaxed)),
            ("socket_overruns", self.socket_overruns.load(Relaxed)),
            ("bad_messages", self.bad_messages.load(Relaxed)),
            ("verdict_errors", self.verdict_errors.load(Relaxed)),
        ]
    }
    fn losses(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("queue", self.queue_lost.load(Relaxed)),
            ("socket_overruns", self.socket_overruns.load(Relaxed)),
        ]
    }
}

impl Source for packet::PacketSource {
    fn name(&self) -> &'static str {
        "packet"
    }
    fn describe(&self) -> String {
        self.describe()
    }
    // Open and bound, the socket needs no capability to read its ring and
    // statistics: everything is dropped.
    fn counters(&self) -> Arc<dyn Counters> {
        self.counters()
    }
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> anyhow::Result<SourceEnd> {
        Ok(packet::PacketSource::run(*self, sink, stop)?)
    }
}

impl Counters for packet::PacketCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("captured", self.packets.load(Relaxed)),
            ("ring_drops", self.ring_drops.load(Relaxed)),
            ("blocks", self.blocks.load(Relaxed)),
            ("loopback_copies", self.loopback_copies.load(Relaxed)),
            ("bad_frames", self.bad_frames.load(Relaxed)),
        ]
    }
    fn losses(&self) -> Vec<(&'static str, u64)> {
        vec![("ring", self.ring_drops.load(Relaxed))]
    }
}

impl Source for nflog::NflogSource {
    fn name(&self) -> &'static str {
        "nflog"
    }
    fn describe(&self) -> String {
        self.describe()
    }
    /// Removing the rules needs CAP_NET_ADMIN (the tools that do it get it
    /// through the ambient set, with CAP_NET_RAW for iptables).
    fn capabilities_kept(&self) -> &'static [caps::Capability] {
        &[
            caps::Capability::CAP_NET_ADMIN,
            caps::Capability::CAP_NET_RAW,
        ]
    }
    fn counters(&self) -> Arc<dyn Counters> {
        self.counters()
    }
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> anyhow::Result<SourceEnd> {
        Ok(nflog::NflogSource::run(*self, sink, stop)?)
    }
}

impl Counters for nflog::NflogCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("logged", self.packets.load(Relaxed)),
            ("sequence_lost", self.sequence_lost.load(Relaxed)),
            ("unaccounted", self.unaccounted.load(Relaxed)),
            ("socket_overruns", self.socket_overruns.load(Relaxed)),
            ("bad_messages", self.bad_messages.load(Relaxed)),
            ("out_batched_ms", self.out_batched_ms.load(Relaxed)),
        ]
    }
    fn losses(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("log_sequence", self.sequence_lost.load(Relaxed)),
            ("log_unaccounted", self.unaccounted.load(Relaxed)),
        ]
    }
}

impl Source for pcap::PcapSource {
    fn name(&self) -> &'static str {
        "pcap"
    }
    fn describe(&self) -> String {
        format!("pcap file {}", self.path().display())
    }
    fn live(&self) -> bool {
        false
    }
    fn counters(&self) -> Arc<dyn Counters> {
        self.counters()
    }
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> anyhow::Result<SourceEnd> {
        Ok(pcap::PcapSource::run(*self, sink, stop)?)
    }
}

impl Counters for pcap::PcapCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("frames", self.frames.load(Relaxed)),
            ("not_ip", self.not_ip.load(Relaxed)),
            ("unknown_link", self.unknown_link.load(Relaxed)),
        ]
    }
    // A file waits for the consumer: nothing is lost before the parser.
    fn losses(&self) -> Vec<(&'static str, u64)> {
        vec![]
    }
}

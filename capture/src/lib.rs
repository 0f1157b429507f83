//! Packet sources. Each yields `RawPacket`s (bytes from the IP header on)
//! into a `PacketSink` (`pipeline`); none of them parses ICMP (that is
//! `icmpmon_core::parse`'s job). Also here: the netlink helpers the kernel
//! sources share, and the capability drop (`privilege`).

pub mod kmod;
mod netlink;
pub mod nfqueue;
pub mod pcap;
pub mod pipeline;
pub mod privilege;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::pipeline::{PacketSink, StopFlag};

/// How a source's capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEnd {
    /// The stop flag was set (Ctrl-C, --count, --duration) and the source
    /// shut down cleanly.
    Stopped,
    /// The source ended on its own; the text says why.
    Ended(String),
}

/// An opened source, ready to run on the capture thread.
#[derive(Debug)]
pub enum Source {
    Kmod(kmod::KmodSource),
    Nfqueue(nfqueue::NfqueueSource),
    Pcap(pcap::PcapSource),
}

impl Source {
    /// The CSV `source` column.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Kmod(_) => "kmod",
            Source::Nfqueue(_) => "nfqueue",
            Source::Pcap(_) => "pcap",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Kmod(k) => format!(
                "kmod (generic netlink family icmpmon, id {})",
                k.family_id()
            ),
            Source::Nfqueue(n) => n.describe(),
            Source::Pcap(p) => format!("pcap file {}", p.path().display()),
        }
    }

    /// Capabilities the source still needs once open (see `privilege`):
    /// NFQUEUE messages need CAP_NET_ADMIN, removing the NFQUEUE rules runs
    /// iptables/nft. The module's CLOSE needs none: it can only end the
    /// caller's own subscription.
    pub fn capabilities_kept(&self) -> &'static [caps::Capability] {
        use caps::Capability::{CAP_NET_ADMIN, CAP_NET_RAW};
        match self {
            Source::Kmod(_) => &[],
            Source::Nfqueue(_) => &[CAP_NET_ADMIN, CAP_NET_RAW],
            Source::Pcap(_) => &[],
        }
    }

    pub fn counters(&self) -> SourceCounters {
        match self {
            Source::Kmod(k) => SourceCounters::Kmod(k.counters()),
            Source::Nfqueue(n) => SourceCounters::Nfqueue(n.counters()),
            Source::Pcap(p) => SourceCounters::Pcap(p.counters()),
        }
    }

    pub fn run(self, sink: PacketSink, stop: &StopFlag) -> anyhow::Result<SourceEnd> {
        Ok(match self {
            Source::Kmod(k) => k.run(sink, stop)?,
            Source::Nfqueue(n) => n.run(sink, stop)?,
            Source::Pcap(p) => p.run(sink, stop)?,
        })
    }
}

/// A handle on a running source's counters, for the summary.
#[derive(Debug, Clone)]
pub enum SourceCounters {
    Kmod(Arc<kmod::KmodCounters>),
    Nfqueue(Arc<nfqueue::NfqCounters>),
    Pcap(Arc<pcap::PcapCounters>),
}

impl SourceCounters {
    /// Every counter, for the machine-readable summary.
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        match self {
            SourceCounters::Kmod(c) => vec![
                ("records", c.records.load(Relaxed)),
                ("batches", c.batches.load(Relaxed)),
                ("kernel_lost", c.kernel_lost.load(Relaxed)),
                ("missing_batches", c.missing_batches.load(Relaxed)),
                ("socket_overruns", c.socket_overruns.load(Relaxed)),
                ("bad_batches", c.bad_batches.load(Relaxed)),
                ("bad_messages", c.bad_messages.load(Relaxed)),
            ],
            SourceCounters::Nfqueue(c) => vec![
                ("queued", c.packets.load(Relaxed)),
                ("queue_lost", c.queue_lost.load(Relaxed)),
                ("socket_overruns", c.socket_overruns.load(Relaxed)),
                ("bad_messages", c.bad_messages.load(Relaxed)),
            ],
            SourceCounters::Pcap(c) => vec![
                ("frames", c.frames.load(Relaxed)),
                ("not_ip", c.not_ip.load(Relaxed)),
                ("unknown_link", c.unknown_link.load(Relaxed)),
            ],
        }
    }

    /// Packets lost per pipeline stage: the source's own stages, then the
    /// capture → aggregator channel (`channel` dropped there).
    pub fn stage_losses(&self, channel: u64) -> Vec<(&'static str, u64)> {
        let mut v = self.losses();
        v.push(("channel", channel));
        v
    }

    /// Where packets can be lost before the channel, for the human summary.
    pub fn losses(&self) -> Vec<(&'static str, u64)> {
        match self {
            SourceCounters::Kmod(c) => vec![
                ("kernel", c.kernel_lost.load(Relaxed)),
                ("missing batches", c.missing_batches.load(Relaxed)),
                ("socket overruns", c.socket_overruns.load(Relaxed)),
            ],
            SourceCounters::Nfqueue(c) => vec![
                ("queue", c.queue_lost.load(Relaxed)),
                ("socket overruns", c.socket_overruns.load(Relaxed)),
            ],
            // A file waits for the consumer: nothing is lost before the parser.
            SourceCounters::Pcap(_) => vec![],
        }
    }
}

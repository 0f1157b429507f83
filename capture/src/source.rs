//! What every source is to the rest of icmpmon: a `Source` that runs on
//! the capture thread, its `Counters`, and how it ended. The sources
//! themselves (kmod, packet, nflog, nfqueue, pcap) implement it in their
//! own modules; `open` picks and opens one.

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

/// A source's failure while capturing: its own typed error (`KmodError`,
/// `PacketError`, …, which say what failed), boxed so that the trait has
/// one error type. Each source's module converts its error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CaptureError(Box<dyn std::error::Error + Send + Sync>);

impl CaptureError {
    pub(crate) fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }

    /// The source's own error, when it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref()
    }
}

/// An opened source, ready to run on the capture thread. The binary only
/// sees this trait, so tests can drive a whole run with a fake.
pub trait Source: Send + std::fmt::Debug {
    /// The CSV `source` column.
    fn name(&self) -> &'static str;
    /// For the start-up line and the dashboard header.
    fn describe(&self) -> String;
    /// What opening it did that the user should hear of (stale rules
    /// removed), one line each; taken once.
    fn notices(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// What its figures cannot tell, for the dashboard to say, if anything.
    fn caveat(&self) -> Option<&'static str> {
        None
    }
    /// Capabilities the source still needs once open (see `privilege`):
    /// kept by its rules helper once it has one (`hand_over`), else by
    /// the process.
    fn capabilities_kept(&self) -> &'static [caps::Capability] {
        &[]
    }
    /// A source with firewall rules: what a rules helper needs to act for
    /// it once this process holds no capability (the rules as installed,
    /// and the netlink socket to send its verdicts or configuration on).
    fn handoff(&self) -> Option<(crate::rules::Handoff, std::os::fd::BorrowedFd<'_>)> {
        None
    }
    /// From now on, what needs a capability goes through `helper`.
    fn hand_over(&mut self, _helper: Arc<dyn crate::rules::Privileged>) {}
    /// Descriptors that could put packets on a network (an AF_PACKET
    /// socket: the kernel checks CAP_NET_RAW only when it is made), which
    /// the sandbox then refuses to write to, by number. The caller keeps
    /// them open until the process ends, so that no file or connection
    /// opened later gets one of those numbers.
    fn senders(&self) -> Vec<Arc<std::os::fd::OwnedFd>> {
        Vec::new()
    }
    /// Whether time moves on between packets (a live capture) rather than
    /// being the packets' own (a file).
    fn live(&self) -> bool {
        true
    }
    fn counters(&self) -> Arc<dyn Counters>;
    /// Captures into `sink` until `stop` (or its own end).
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, CaptureError>;
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

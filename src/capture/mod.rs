//! Packet sources. Each yields `RawPacket`s (bytes from the IP header on)
//! into a `PacketSink`; none of them parses ICMP (that is `parse`'s job).

pub mod kmod;

/// How a source's capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEnd {
    /// The stop flag was set (Ctrl-C, --count, --duration) and the source
    /// shut down cleanly.
    Stopped,
    /// The source ended on its own; the text says why.
    Ended(String),
}

//! Capture → bounded channel → consumer. The capture side never waits: a
//! full channel drops the batch and counts its packets.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use icmpmon_core::event::RawPacket;

/// Why a run is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    Signal = 1,
    Count = 2,
    Duration = 3,
    OutputClosed = 4,
    Quit = 5,
}

impl StopReason {
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Signal => "interrupted (SIGINT/SIGTERM)",
            StopReason::Count => "--count reached",
            StopReason::Duration => "--duration elapsed",
            StopReason::OutputClosed => "output closed",
            StopReason::Quit => "quit from the dashboard",
        }
    }
}

/// Shared "please stop" flag; the first reason given wins.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicU8>);

impl StopFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&self, reason: StopReason) {
        let _ = self
            .0
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst) != 0
    }
    pub fn reason(&self) -> Option<StopReason> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(StopReason::Signal),
            2 => Some(StopReason::Count),
            3 => Some(StopReason::Duration),
            4 => Some(StopReason::OutputClosed),
            5 => Some(StopReason::Quit),
            _ => None,
        }
    }
}

/// The capture thread's end of the channel.
#[derive(Debug)]
pub struct PacketSink {
    tx: Sender<Vec<RawPacket>>,
    dropped: Arc<AtomicU64>,
}

impl PacketSink {
    /// Hands a batch on, or drops and counts it if the consumer lags.
    pub fn send(&self, batch: Vec<RawPacket>) {
        if batch.is_empty() {
            return;
        }
        if let Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) = self.tx.try_send(batch)
        {
            self.dropped.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
    }
}

impl PacketSink {
    /// Hands a batch on, waiting while the channel is full: for offline
    /// sources, which have no deadline and must not lose packets. Returns
    /// false once the consumer is gone.
    pub fn send_wait(&self, batch: Vec<RawPacket>) -> bool {
        self.tx.send(batch).is_ok()
    }
}

/// A channel holding at most `capacity` batches, and its drop counter.
pub fn channel(capacity: usize) -> (PacketSink, Receiver<Vec<RawPacket>>, Arc<AtomicU64>) {
    let (tx, rx) = bounded(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        PacketSink {
            tx,
            dropped: Arc::clone(&dropped),
        },
        rx,
        dropped,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use icmpmon_core::event::Direction;

    fn pkt() -> RawPacket {
        RawPacket {
            mono_ns: None,
            ts_ns: 0,
            direction: Direction::In,
            ifindex: 0,
            orig_len: 0,
            data: vec![],
        }
    }

    #[test]
    fn first_stop_reason_wins() {
        let stop = StopFlag::new();
        assert!(!stop.is_set());
        stop.set(StopReason::Count);
        stop.clone().set(StopReason::Signal);
        assert!(stop.is_set());
        assert_eq!(stop.reason(), Some(StopReason::Count));
    }

    #[test]
    fn full_channel_drops_and_counts_without_blocking() {
        let (sink, rx, dropped) = channel(1);
        sink.send(vec![pkt(), pkt()]);
        sink.send(vec![pkt(), pkt(), pkt()]);
        sink.send(vec![]);
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.try_recv().unwrap().len(), 2);
        drop(rx);
        sink.send(vec![pkt()]);
        assert_eq!(dropped.load(Ordering::Relaxed), 4);
        assert!(!sink.send_wait(vec![pkt()]));
    }
}

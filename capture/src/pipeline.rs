//! Capture → bounded channel → consumer. The capture side never waits: a
//! full channel drops the batch and counts its packets.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, Sender, TrySendError};
use rustix::event::EventfdFlags;

use icmpmon_core::batch::Batch;

/// Why a run is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    Signal = 1,
    Count = 2,
    Duration = 3,
    OutputClosed = 4,
    Quit = 5,
    Hangup = 6,
    /// A thread of the run failed (the aggregator panicked).
    Failed = 7,
}

impl StopReason {
    const ALL: [StopReason; 7] = [
        StopReason::Signal,
        StopReason::Count,
        StopReason::Duration,
        StopReason::OutputClosed,
        StopReason::Quit,
        StopReason::Hangup,
        StopReason::Failed,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Signal => "interrupted (SIGINT/SIGTERM)",
            StopReason::Count => "--count reached",
            StopReason::Duration => "--duration elapsed",
            StopReason::OutputClosed => "output closed",
            StopReason::Quit => "quit from the dashboard",
            StopReason::Hangup => "hung up (SIGHUP)",
            StopReason::Failed => "a thread failed",
        }
    }
}

/// The one shutdown path: every blocking wait of a run observes it. Threads
/// polling a file descriptor add `fd()` to their poll set (an eventfd that
/// turns readable on stop); threads in `crossbeam_channel::select!` add
/// `stopped()` (a channel that disconnects on stop); busy loops read
/// `is_set()`. The first reason given wins.
#[derive(Debug, Clone)]
pub struct Stop(Arc<StopInner>);

#[derive(Debug)]
struct StopInner {
    reason: AtomicU8,
    fd: OwnedFd,
    /// Dropped on stop, which disconnects `rx`.
    tx: Mutex<Option<Sender<Never>>>,
    rx: Receiver<Never>,
}

/// No value ever travels on the stop channel; only its disconnection does.
#[derive(Debug)]
pub enum Never {}

impl Stop {
    pub fn new() -> io::Result<Self> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let (tx, rx) = bounded(0);
        Ok(Self(Arc::new(StopInner {
            reason: AtomicU8::new(0),
            fd,
            tx: Mutex::new(Some(tx)),
            rx,
        })))
    }

    pub fn set(&self, reason: StopReason) {
        let won = self
            .0
            .reason
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if won {
            // Cannot fail short of a counter overflow; poll sees it readable.
            let _ = rustix::io::write(&self.0.fd, &1u64.to_ne_bytes());
            self.0.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    pub fn is_set(&self) -> bool {
        self.0.reason.load(Ordering::SeqCst) != 0
    }

    pub fn reason(&self) -> Option<StopReason> {
        let r = self.0.reason.load(Ordering::SeqCst);
        StopReason::ALL.into_iter().find(|s| *s as u8 == r)
    }

    /// Readable once stopped: for poll().
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }

    /// Disconnected once stopped: for `select!`.
    pub fn stopped(&self) -> &Receiver<Never> {
        &self.0.rx
    }

    /// Sets `reason` if the returned guard is dropped by a panic: a thread
    /// that unwinds still ends the run.
    pub fn on_panic(&self, reason: StopReason) -> StopOnPanic {
        StopOnPanic(self.clone(), reason)
    }
}

/// See `Stop::on_panic`.
#[derive(Debug)]
pub struct StopOnPanic(Stop, StopReason);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.set(self.1);
        }
    }
}

/// The capture thread's end of the channel (a drop tracer beside the
/// source holds a clone).
#[derive(Debug, Clone)]
pub struct PacketSink {
    tx: Sender<Batch>,
    dropped: Arc<AtomicU64>,
    pool: Pool,
}

/// Batches kept for reuse beyond the two in hand.
const POOLED: usize = 16;

/// Batches the consumer has emptied, for the capture side to fill again:
/// a flood allocates nothing once their buffers have grown.
#[derive(Debug, Clone)]
struct Pool {
    give: Sender<Batch>,
    take: Receiver<Batch>,
}

impl Pool {
    fn recycle(&self, mut b: Batch) {
        if b.clear() {
            // Full: enough are kept; this one goes.
            let _ = self.give.try_send(b);
        }
    }
}

impl PacketSink {
    /// An empty batch to fill: a reused one when the consumer gave one back.
    pub fn batch(&self) -> Batch {
        self.pool.take.try_recv().unwrap_or_default()
    }

    /// Hands a batch on, or drops and counts it if the consumer lags.
    pub fn send(&self, batch: Batch) {
        if batch.is_empty() {
            self.pool.recycle(batch);
            return;
        }
        if let Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) = self.tx.try_send(batch)
        {
            self.dropped.fetch_add(b.len() as u64, Ordering::Relaxed);
            self.pool.recycle(b);
        }
    }

    /// Hands the batch in `batch` on and leaves an empty one in its place.
    pub fn send_take(&self, batch: &mut Batch) {
        if !batch.is_empty() {
            let fresh = self.batch();
            self.send(std::mem::replace(batch, fresh));
        }
    }

    /// Hands a batch on, waiting while the channel is full: for offline
    /// sources, which have no deadline and must not lose packets. Returns
    /// false once the consumer is gone or the run stops.
    pub fn send_wait(&self, batch: Batch, stop: &Stop) -> bool {
        select! {
            send(self.tx, batch) -> r => match r {
                Ok(()) => true,
                Err(e) => {
                    self.pool.recycle(e.into_inner());
                    false
                }
            },
            recv(stop.stopped()) -> _ => false,
        }
    }
}

/// How long a source may gather the packets of several reads into one
/// batch before it hands it on. A flood of small reads (NFLOG's messages,
/// a few packets each) then wakes the aggregator thread once per
/// `GATHER_FOR`, not once per read: each wake-up cost it more than the
/// packets it brought. Capture does not wait for it: the source's next
/// wait for packets ends when the batch is due (`Gathered::due`).
const GATHER_FOR: Duration = Duration::from_millis(1);

/// Packets in one batch that goes once `GATHER_FOR` old.
const GATHER_PACKETS: usize = 1024;

/// A batch being filled across reads.
#[derive(Debug)]
pub struct Gathered {
    batch: Option<Batch>,
    /// When its first packet came.
    since: Option<Instant>,
    hold: Duration,
}

impl Default for Gathered {
    fn default() -> Self {
        Self {
            batch: None,
            since: None,
            hold: GATHER_FOR,
        }
    }
}

impl Gathered {
    /// The batch to push into.
    pub fn batch(&mut self, sink: &PacketSink) -> &mut Batch {
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
        self.batch.get_or_insert_with(|| sink.batch())
    }

    /// Whether the batch should go now, unasked: it is full.
    pub fn full(&self) -> bool {
        self.batch
            .as_ref()
            .is_some_and(|b| b.len() >= GATHER_PACKETS)
    }

    /// After a read: hands the batch on once it is full or `GATHER_FOR` old.
    /// Nothing gathered (the source held back what it read): no time runs.
    pub fn offer(&mut self, sink: &PacketSink) {
        if self.batch.as_ref().is_some_and(Batch::is_empty) {
            self.since = None;
        } else if self.full() || self.due() == Some(Duration::ZERO) {
            self.send(sink);
        }
    }

    /// Hands on what is gathered (an empty batch stays, for the next).
    pub fn send(&mut self, sink: &PacketSink) {
        self.since = None;
        if let Some(b) = self.batch.take_if(|b| !b.is_empty()) {
            sink.send(b);
        }
    }

    /// How long until the batch is due: at most how long the source may
    /// wait for more packets; `None` with nothing gathered.
    pub fn due(&self) -> Option<Duration> {
        let since = self.since?;
        Some(self.hold.saturating_sub(since.elapsed()))
    }
}

/// The consumer's end of the channel.
#[derive(Debug)]
pub struct Batches {
    rx: Receiver<Batch>,
    pool: Pool,
}

impl Batches {
    /// For `select!` and `recv`.
    pub fn receiver(&self) -> &Receiver<Batch> {
        &self.rx
    }

    /// Gives a batch that has been read back to the capture side.
    pub fn recycle(&self, batch: Batch) {
        self.pool.recycle(batch);
    }
}

/// A channel holding at most `capacity` batches, and its drop counter.
pub fn channel(capacity: usize) -> (PacketSink, Batches, Arc<AtomicU64>) {
    let (tx, rx) = bounded(capacity);
    // One being filled, one being read, and a few in the channel: a deep
    // channel that filled in a burst gives most of its batches back to
    // the allocator rather than keep them for the rest of the run.
    let (give, take) = bounded(capacity.min(POOLED) + 2);
    let pool = Pool { give, take };
    let dropped = Arc::new(AtomicU64::new(0));
    (
        PacketSink {
            tx,
            dropped: Arc::clone(&dropped),
            pool: pool.clone(),
        },
        Batches { rx, pool },
        dropped,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use icmpmon_core::event::{Direction, RawPacket};

    fn batch(n: usize) -> Batch {
        let p = RawPacket {
            drop: None,
            mono_ns: None,
            ts_ns: 0,
            direction: Direction::In,
            ifindex: 0,
            orig_len: 0,
            data: &[1, 2, 3],
        };
        std::iter::repeat_n(p, n).collect()
    }

    /// A gathered batch goes when it is due or full, not before; its due
    /// time bounds the source's wait.
    #[test]
    fn gathered_packets_go_when_due_or_full() {
        let (sink, rx, _) = channel(8);
        assert!(Gathered::default().hold == GATHER_FOR);
        // A long hold, so that a busy machine cannot make it due.
        let mut g = Gathered {
            hold: Duration::from_secs(60),
            ..Gathered::default()
        };
        assert_eq!(g.due(), None);
        g.batch(&sink).extend(batch(3).iter());
        assert!(g.due().is_some_and(|d| d > Duration::ZERO));
        g.offer(&sink);
        assert!(rx.receiver().try_recv().is_err(), "held until due");
        g.hold = Duration::ZERO;
        assert_eq!(g.due(), Some(Duration::ZERO));
        g.offer(&sink);
        assert_eq!(rx.receiver().try_recv().map(|b| b.len()), Ok(3));
        assert_eq!(g.due(), None);
        g.batch(&sink).extend(batch(GATHER_PACKETS).iter());
        assert!(g.full());
        g.offer(&sink);
        assert_eq!(
            rx.receiver().try_recv().map(|b| b.len()),
            Ok(GATHER_PACKETS),
            "full: at once"
        );
        g.batch(&sink).extend(batch(1).iter());
        g.send(&sink);
        assert_eq!(rx.receiver().try_recv().map(|b| b.len()), Ok(1));
        // A batch taken but left empty starts no time and is not sent.
        g.hold = Duration::ZERO;
        g.batch(&sink);
        g.offer(&sink);
        assert_eq!(g.due(), None);
        g.send(&sink);
        assert!(rx.receiver().try_recv().is_err(), "nothing sent");
    }

    #[test]
    fn first_stop_reason_wins() {
        let stop = Stop::new().unwrap();
        assert!(!stop.is_set());
        assert_eq!(stop.reason(), None);
        stop.set(StopReason::Count);
        stop.clone().set(StopReason::Signal);
        assert!(stop.is_set());
        assert_eq!(stop.reason(), Some(StopReason::Count));
        for r in StopReason::ALL {
            let s = Stop::new().unwrap();
            s.set(r);
            assert_eq!(s.reason(), Some(r));
        }
    }

    #[test]
    fn stop_wakes_select_and_poll() {
        let stop = Stop::new().unwrap();
        let fd = stop.fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let none = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        assert_eq!(rustix::event::poll(&mut fds, Some(&none)).unwrap(), 0);
        assert!(stop.stopped().try_recv().unwrap_err().is_empty());
        let waiter = std::thread::spawn({
            let stop = stop.clone();
            move || stop.stopped().recv().is_err()
        });
        drop(stop.on_panic(StopReason::Failed));
        assert!(!stop.is_set(), "only a panic sets it");
        let s2 = stop.clone();
        let _ = std::thread::spawn(move || {
            let _guard = s2.on_panic(StopReason::Failed);
            panic!("test panic");
        })
        .join();
        assert!(waiter.join().unwrap());
        assert_eq!(stop.reason(), Some(StopReason::Failed));
        let fd = stop.fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        assert_eq!(rustix::event::poll(&mut fds, Some(&none)).unwrap(), 1);
    }

    #[test]
    fn send_wait_gives_up_on_stop() {
        let (sink, _rx, _) = channel(1);
        let stop = Stop::new().unwrap();
        assert!(sink.send_wait(batch(1), &stop));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            s2.set(StopReason::Signal);
        });
        // The channel is full and its receiver alive: only the stop ends this.
        assert!(!sink.send_wait(batch(1), &stop));
        t.join().unwrap();
    }

    #[test]
    fn full_channel_drops_and_counts_without_blocking() {
        let (sink, rx, dropped) = channel(1);
        sink.send(batch(2));
        sink.send(batch(3));
        sink.send(batch(0));
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.receiver().try_recv().unwrap().len(), 2);
        drop(rx);
        sink.send(batch(1));
        assert_eq!(dropped.load(Ordering::Relaxed), 4);
        assert!(!sink.send_wait(batch(1), &Stop::new().unwrap()));
    }

    #[test]
    fn batches_come_back_empty_for_reuse() {
        let (sink, rx, _) = channel(2);
        let mut b = sink.batch();
        b.extend(batch(3).iter());
        let cap = b.bytes();
        sink.send_take(&mut b);
        assert!(b.is_empty());
        let got = rx.receiver().try_recv().unwrap();
        assert_eq!((got.len(), got.bytes()), (3, cap));
        rx.recycle(got);
        // The one given back, emptied (a fresh one would be the same, so
        // look at what the pool holds).
        let again = sink.pool.take.try_recv().unwrap();
        assert!(again.is_empty());
        assert!(sink.pool.take.try_recv().is_err());
        // A dropped batch goes back to the pool too.
        let (sink, _rx, dropped) = channel(1);
        sink.send(batch(1));
        sink.send(batch(2));
        assert_eq!(dropped.load(Ordering::Relaxed), 2);
        assert!(sink.pool.take.try_recv().unwrap().is_empty());
    }
}

//! A registered subscription: REGISTER, then the capture loop that turns
//! RECORDS batches into `RawPacket`s, probes the module with STATS now and
//! then (a module that went away without its BYE reaching us still ends
//! the run) and says CLOSE on the way out.

use crate::source::{CaptureError, Counters, Source, SourceEnd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::abi::{self, cmd, IcmpmonAttr};
use crate::netlink::{self, Wait};
use crate::pipeline::{PacketSink, Stop};

use super::client::{Incoming, KmodClient, KmodError, KmodOptions, Tail, REPLY_TIMEOUT};

/// Why the run ends when a liveness probe finds us gone.
const UNSUBSCRIBED: &str =
    "the icmpmon kernel module no longer has our subscription (reloaded, and its BYE was lost)";

/// How often a running subscription checks that the module still has it.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Messages kept that arrive before REGISTER's ACK (about 4 MB of batches).
const MAX_EARLY: usize = 256;
/// Datagrams read at most before CLOSE (about 64 MB of batches).
const DRAIN_MAX: usize = 8192;
/// How long to wait for BYE when CLOSE finds the module unloading.
const BYE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the receive side saw; shared with the summary.
#[derive(Debug, Default)]
pub struct KmodCounters {
    pub batches: AtomicU64,
    pub records: AtomicU64,
    /// Sum of LOST over the batches that arrived.
    pub kernel_lost: AtomicU64,
    /// Batches missing from the SEQ sequence.
    pub missing_batches: AtomicU64,
    /// ENOBUFS on receive: the socket buffer overflowed.
    pub socket_overruns: AtomicU64,
    /// RECORDS attributes that could not be walked to their end.
    pub bad_batches: AtomicU64,
    /// Messages from the module that could not be decoded at all.
    pub bad_messages: AtomicU64,
    /// Records the module made for us in all, from CLOSE's reply or BYE
    /// (0 until then): then it equals `records + kernel_lost`.
    pub kernel_seen: AtomicU64,
    pub settled: AtomicBool,
}

impl KmodClient {
    /// Subscribes this socket; records start flowing at once, even before
    /// the ACK: those are kept for `run`.
    pub fn register(mut self, opts: &KmodOptions) -> Result<KmodSource, KmodError> {
        netlink::set_receive_buffer(&self.sock, opts.socket_buffer);
        let mut early = Vec::new();
        // Bounded: a batch dropped here leaves a SEQ gap, counted missing.
        self.transact(
            "REGISTER",
            cmd::REGISTER,
            vec![
                IcmpmonAttr::HookMask(abi::HOOK_F_PRE_ROUTING | abi::HOOK_F_LOCAL_OUT),
                IcmpmonAttr::FamilyMask(abi::FAMILY_F_IPV4 | abi::FAMILY_F_IPV6),
                IcmpmonAttr::Snaplen(opts.snaplen),
                IcmpmonAttr::BatchBytes(opts.batch_bytes),
                IcmpmonAttr::FlushMs(opts.flush_ms),
            ],
            &mut |m| {
                if early.len() < MAX_EARLY {
                    early.push(m);
                }
            },
        )?;
        tracing::info!("REGISTER acknowledged (family id {})", self.family_id);
        Ok(KmodSource {
            client: self,
            counters: Arc::default(),
            next_batch: 0,
            early,
            probe: None,
        })
    }
}

/// A registered subscription: the capture loop of the kmod source.
pub struct KmodSource {
    client: KmodClient,
    counters: Arc<KmodCounters>,
    next_batch: u64,
    /// Messages that arrived before REGISTER's ACK.
    early: Vec<Incoming>,
    /// The liveness STATS request in flight: its netlink sequence number
    /// and when it went out.
    probe: Option<(u32, Instant)>,
}

impl std::fmt::Debug for KmodSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmodSource")
            .field("client", &self.client)
            .field("next_batch", &self.next_batch)
            .finish_non_exhaustive()
    }
}

impl KmodSource {
    pub fn counters(&self) -> Arc<KmodCounters> {
        Arc::clone(&self.counters)
    }

    pub fn family_id(&self) -> u16 {
        self.client.family_id
    }

    /// Turns one RECORDS batch into packets for the sink.
    fn deliver(&mut self, seq: u64, lost: u64, data: &[u8], sink: &PacketSink) {
        let c = &self.counters;
        c.batches.fetch_add(1, Relaxed);
        c.kernel_lost.fetch_add(lost, Relaxed);
        if seq > self.next_batch {
            c.missing_batches.fetch_add(seq - self.next_batch, Relaxed);
        }
        self.next_batch = seq + 1;

        let mut batch = sink.batch();
        for rec in abi::records(data) {
            match rec {
                Ok((rec, bytes)) => batch.push(rec.to_raw(bytes, rec.ts_real_ns)),
                Err(e) => {
                    tracing::warn!("{e}");
                    c.bad_batches.fetch_add(1, Relaxed);
                }
            }
        }
        c.records.fetch_add(batch.len() as u64, Relaxed);
        sink.send(batch);
    }

    /// Counts what the module says of the end: losses after the last
    /// delivered batch, and batches sent after it that never came.
    fn settle(&mut self, tail: &Tail) {
        let c = &self.counters;
        c.kernel_lost.fetch_add(tail.lost, Relaxed);
        if tail.seq > self.next_batch {
            c.missing_batches
                .fetch_add(tail.seq - self.next_batch, Relaxed);
            self.next_batch = tail.seq;
        }
        c.kernel_seen.store(tail.seen, Relaxed);
        c.settled.store(true, Relaxed);
    }

    /// Handles one message outside a request; `Some` ends the capture.
    fn handle(&mut self, msg: Incoming, sink: &PacketSink) -> Option<SourceEnd> {
        match msg {
            Incoming::Records { seq, lost, data } => {
                self.deliver(seq, lost, &data, sink);
                None
            }
            Incoming::Overrun => {
                self.counters.socket_overruns.fetch_add(1, Relaxed);
                // The probe's answer may be among what was lost: ask again.
                self.probe = None;
                None
            }
            Incoming::Undecodable => {
                tracing::warn!("a message from the icmpmon module did not decode");
                self.counters.bad_messages.fetch_add(1, Relaxed);
                None
            }
            Incoming::Closed(tail) => {
                self.settle(&tail);
                None
            }
            Incoming::Bye(reason, tail) => {
                if let Some(t) = tail {
                    self.settle(&t);
                }
                Some(SourceEnd::Ended(match reason {
                    abi::BYE_UNLOAD => "the icmpmon kernel module was unloaded".into(),
                    r => format!("the kernel ended the subscription (BYE reason {r})"),
                }))
            }
            Incoming::Stats(s) if self.probe.is_some() && !s.subscribed => {
                Some(SourceEnd::Ended(UNSUBSCRIBED.into()))
            }
            Incoming::Done(seq, refusal) if self.probe.is_some_and(|(s, _)| s == seq) => {
                self.probe = None;
                match refusal {
                    None => None,
                    // Unknown family: it was unregistered (unload) and the
                    // BYE was lost to a full buffer.
                    Some(r) if matches!(r.errno(), Some(libc::ENOENT | libc::EOPNOTSUPP)) => {
                        Some(SourceEnd::Ended(format!(
                            "the icmpmon kernel module went away without a BYE ({})",
                            r.errno
                        )))
                    }
                    // Refused: only a subscriber may ask without privilege.
                    Some(r) if r.errno() == Some(libc::EPERM) => {
                        Some(SourceEnd::Ended(UNSUBSCRIBED.into()))
                    }
                    Some(r) => {
                        tracing::warn!("the liveness STATS request failed: {r}");
                        None
                    }
                }
            }
            Incoming::Stats(_) | Incoming::Done(..) | Incoming::Other => None,
        }
    }

    /// Receives until `stop` is set or the kernel ends the subscription,
    /// then CLOSEs.
    pub fn run(mut self, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, KmodError> {
        for msg in std::mem::take(&mut self.early) {
            if let Some(end) = self.handle(msg, &sink) {
                return Ok(end);
            }
        }
        let mut next_probe = Instant::now() + PROBE_INTERVAL;
        loop {
            let now = Instant::now();
            if now >= next_probe {
                // A new probe unless one is still waiting for its answer
                // (an answer lost to a full buffer is not waited for).
                if self
                    .probe
                    .is_none_or(|(_, sent)| now.duration_since(sent) >= REPLY_TIMEOUT)
                {
                    self.probe = Some((self.client.request(cmd::STATS, vec![])?, now));
                }
                next_probe = now + PROBE_INTERVAL;
            }
            let left = next_probe.saturating_duration_since(Instant::now());
            match netlink::wait_readable(&self.client.sock, Some(left), Some(stop))? {
                Wait::Stopped => break,
                Wait::TimedOut => continue,
                Wait::Readable => {}
            }
            for msg in self.client.receive()? {
                if let Some(end) = self.handle(msg, &sink) {
                    return Ok(end);
                }
            }
        }
        self.close(&sink)
    }

    /// CLOSE with ACK; the batch the kernel flushes first still counts.
    /// While the module unloads, CLOSE is refused and the module flushes
    /// and says BYE on its own: wait for that (for a while) instead of
    /// closing the socket on it.
    fn close(mut self, sink: &PacketSink) -> Result<SourceEnd, KmodError> {
        // What is queued is read first: the module sends the tail (CLOSE's
        // reply) only into room left after its last batches.
        if let Some(end) = self.drain(sink)? {
            return Ok(end);
        }
        let mut pending = Vec::new();
        let result = self
            .client
            .transact("CLOSE", cmd::CLOSE, vec![], &mut |m| pending.push(m));
        let mut end = SourceEnd::Stopped;
        for msg in pending {
            if let Some(e) = self.handle(msg, sink) {
                end = e;
            }
        }
        match result {
            Ok(()) => {
                tracing::info!("CLOSE acknowledged by the kernel");
                Ok(end)
            }
            // The kernel ended it meanwhile (BYE, or the family is gone).
            Err(_) if matches!(end, SourceEnd::Ended(_)) => Ok(end),
            Err(KmodError::Refused(r)) if r.errno() == Some(libc::ESHUTDOWN) => {
                Ok(self.wait_for_bye(sink))
            }
            // Not acknowledged (the family vanished, or the ACK was lost
            // to a full buffer): closing the socket ends the subscription
            // anyway; what the kernel still held for us is counted there.
            Err(e) => {
                tracing::warn!(
                    "CLOSE not acknowledged ({e}); closing the socket ends the subscription"
                );
                Ok(end)
            }
        }
    }

    /// Reads what the socket holds now (a bounded number of datagrams:
    /// a flood keeps refilling it); `Some` when the kernel ended the
    /// subscription meanwhile.
    fn drain(&mut self, sink: &PacketSink) -> Result<Option<SourceEnd>, KmodError> {
        for _ in 0..DRAIN_MAX {
            if !netlink::readable_within(&self.client.sock, Duration::ZERO)? {
                break;
            }
            for msg in self.client.receive()? {
                if let Some(end) = self.handle(msg, sink) {
                    return Ok(Some(end));
                }
            }
        }
        Ok(None)
    }

    fn wait_for_bye(&mut self, sink: &PacketSink) -> SourceEnd {
        let deadline = Instant::now() + BYE_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match netlink::readable_within(&self.client.sock, left) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!("waiting for BYE: {e}");
                    break;
                }
            }
            let msgs = match self.client.receive() {
                Ok(msgs) => msgs,
                Err(e) => {
                    tracing::warn!("waiting for BYE: {e}");
                    break;
                }
            };
            for msg in msgs {
                if let Some(end) = self.handle(msg, sink) {
                    return end;
                }
            }
        }
        SourceEnd::Ended(format!(
            "the icmpmon kernel module is being unloaded (no BYE within {BYE_TIMEOUT:?})"
        ))
    }
}

impl From<KmodError> for CaptureError {
    fn from(e: KmodError) -> Self {
        CaptureError::new(e)
    }
}

impl Source for KmodSource {
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
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, CaptureError> {
        Ok(KmodSource::run(*self, sink, stop)?)
    }
}

impl Counters for KmodCounters {
    fn fields(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("records", self.records.load(Relaxed)),
            ("batches", self.batches.load(Relaxed)),
            ("kernel_lost", self.kernel_lost.load(Relaxed)),
            ("missing_batches", self.missing_batches.load(Relaxed)),
            ("socket_overruns", self.socket_overruns.load(Relaxed)),
            ("bad_batches", self.bad_batches.load(Relaxed)),
            ("bad_messages", self.bad_messages.load(Relaxed)),
        ];
        // Only once the module has said it: a guess would look exact.
        if self.settled.load(Relaxed) {
            v.push(("kernel_seen", self.kernel_seen.load(Relaxed)));
        }
        v
    }
    fn losses(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("kernel", self.kernel_lost.load(Relaxed)),
            ("missing_batches", self.missing_batches.load(Relaxed)),
            ("socket_overruns", self.socket_overruns.load(Relaxed)),
        ]
    }
}

//! The kernel-module source: a generic netlink client of the `icmpmon`
//! family (kmod-hook/). Resolves the family (refusing a module that speaks
//! another protocol version), REGISTERs this socket, turns RECORDS batches
//! into `RawPacket`s and says CLOSE on the way out. While it runs it asks
//! for STATS now and then, so a module that went away without its BYE
//! reaching us (a full socket buffer) still ends the run.

use crate::source::{CaptureError, Counters, Source, SourceEnd};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_generic::ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};

use crate::netlink::{self, Refusal, Wait};
use crate::pipeline::{PacketSink, Stop};
use abi::{attr, cmd, IcmpmonAttr, IcmpmonMsg};
use icmpmon_core::event::{Direction, RawPacket};

/// The module's wire format, mirrored from `kmod-hook/icmpmon_uapi.h`.
pub mod abi;

/// Larger than any batch the module sends (ICMPMON_BATCH_BYTES_MAX + headers).
const RECV_BUFFER: usize = 256 * 1024;
/// How long to wait for the kernel to answer a request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a running subscription checks that the module still has it.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Messages kept that arrive before REGISTER's ACK (about 4 MB of batches).
const MAX_EARLY: usize = 256;
/// How long to wait for BYE when CLOSE finds the module unloading.
const BYE_TIMEOUT: Duration = Duration::from_secs(3);
/// The command that loads the module with its dependencies.
const LOAD_HINT: &str =
    "`make -C kmod-hook && sudo make -C kmod-hook install && sudo modprobe icmpmon`";

#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error(
        "the icmpmon kernel module is not loaded (no generic netlink family \"icmpmon\"): \
         load it with {LOAD_HINT}, or capture without it: --source packet (what the default, auto, then uses)"
    )]
    NotLoaded,
    #[error(
        "the loaded icmpmon kernel module speaks protocol version {}, this icmpmon speaks \
         version {GENL_VERSION}: rebuild and reload the module from this tree \
         (`sudo rmmod icmpmon`, then {LOAD_HINT})",
        .0.map_or("unknown".to_string(), |v| v.to_string()),
        GENL_VERSION = abi::GENL_VERSION
    )]
    WrongVersion(Option<u32>),
    #[error(
        "registering with the icmpmon kernel module needs CAP_NET_ADMIN in this network \
         namespace: run icmpmon with sudo (or give it cap_net_admin)"
    )]
    NeedsCapNetAdmin,
    #[error(
        "the icmpmon kernel module already serves its maximum number of monitors in this \
         network namespace: stop another icmpmon, or reload the module with a larger \
         max_subscribers (e.g. `sudo modprobe icmpmon max_subscribers=16`)"
    )]
    Busy,
    #[error(transparent)]
    Refused(Refusal),
    #[error("no answer from the kernel to {0} within {REPLY_TIMEOUT:?}")]
    Timeout(&'static str),
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
}

/// REGISTER settings (see the limits in proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KmodOptions {
    pub snaplen: u32,
    pub batch_bytes: u32,
    pub flush_ms: u32,
    /// Receive buffer asked for (SO_RCVBUFFORCE, else SO_RCVBUF).
    pub socket_buffer: usize,
}

/// The module's STATS counters for this network namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KmodStats {
    pub packets: u64,
    pub seen: u64,
    pub delivered: u64,
    pub lost_nobufs: u64,
    pub lost_nomem: u64,
    pub lost_closed: u64,
    pub lost_other: u64,
    pub truncated: u64,
    pub subscribers: u32,
    /// Whether the asking socket is a subscriber.
    pub subscribed: bool,
}

impl KmodStats {
    fn from_attrs(attrs: &[IcmpmonAttr]) -> Self {
        let mut s = Self::default();
        for a in attrs {
            match *a {
                IcmpmonAttr::Counter(kind, v) => {
                    let slot = match kind {
                        attr::STAT_PACKETS => &mut s.packets,
                        attr::STAT_SEEN => &mut s.seen,
                        attr::STAT_DELIVERED => &mut s.delivered,
                        attr::STAT_LOST_NOBUFS => &mut s.lost_nobufs,
                        attr::STAT_LOST_NOMEM => &mut s.lost_nomem,
                        attr::STAT_LOST_CLOSED => &mut s.lost_closed,
                        attr::STAT_LOST_OTHER => &mut s.lost_other,
                        attr::STAT_TRUNCATED => &mut s.truncated,
                        _ => continue,
                    };
                    *slot = v;
                }
                IcmpmonAttr::Subscribers(n) => s.subscribers = n,
                IcmpmonAttr::Subscribed(b) => s.subscribed = b,
                _ => {}
            }
        }
        s
    }

    /// `name value` pairs in a stable order (for `icmpmon stats`).
    pub fn fields(&self) -> [(&'static str, u64); 9] {
        [
            ("packets", self.packets),
            ("seen", self.seen),
            ("delivered", self.delivered),
            ("lost_nobufs", self.lost_nobufs),
            ("lost_nomem", self.lost_nomem),
            ("lost_closed", self.lost_closed),
            ("lost_other", self.lost_other),
            ("truncated", self.truncated),
            ("subscribers", u64::from(self.subscribers)),
        ]
    }
}

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
}

/// What one incoming message means to us.
enum Incoming {
    Records {
        seq: u64,
        lost: u64,
        data: Vec<u8>,
    },
    Bye(u32),
    Stats(KmodStats),
    /// ACK (None) or error for the request with this netlink sequence.
    Done(u32, Option<Refusal>),
    /// ENOBUFS on receive: the socket buffer overflowed, records were lost.
    Overrun,
    /// A message of the icmpmon family that does not decode.
    Undecodable,
    /// Not for us (another family, or a command we do not handle).
    Other,
}

/// A generic netlink socket talking to the icmpmon family.
pub struct KmodClient {
    sock: Socket,
    family_id: u16,
    next_seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for KmodClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmodClient")
            .field("family_id", &self.family_id)
            .finish_non_exhaustive()
    }
}

impl KmodClient {
    /// Opens a socket and resolves the family; `NotLoaded` if it is absent.
    pub fn open() -> Result<Self, KmodError> {
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        sock.bind_auto()?;
        // Error messages from the kernel (extack) and no echo of our request.
        sock.set_ext_ack(true)?;
        sock.set_cap_ack(true)?;
        let mut client = Self {
            sock,
            family_id: 0,
            next_seq: 1,
            buf: Vec::with_capacity(RECV_BUFFER),
        };
        client.family_id = client.resolve_family()?;
        Ok(client)
    }

    fn send<M>(&mut self, mut msg: NetlinkMessage<M>) -> Result<u32, KmodError>
    where
        M: netlink_packet_core::NetlinkSerializable,
    {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        self.sock.send(&out, 0)?;
        Ok(seq)
    }

    fn resolve_family(&mut self) -> Result<u16, KmodError> {
        let req = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(abi::GENL_NAME.to_owned())],
        });
        let seq = self.send(NetlinkMessage::from(req))?;
        let (mut id, mut version) = (None, None);
        loop {
            if !netlink::readable_within(&self.sock, REPLY_TIMEOUT)? {
                return Err(KmodError::Timeout("the family lookup"));
            }
            self.recv()?;
            for msg in netlink::datagram_messages(&self.buf) {
                let Ok(msg) = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(msg) else {
                    continue;
                };
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => {
                        for a in &m.payload.nlas {
                            match a {
                                GenlCtrlAttrs::FamilyId(v) => id = Some(*v),
                                GenlCtrlAttrs::Version(v) => version = Some(*v),
                                _ => {}
                            }
                        }
                    }
                    NetlinkPayload::Error(e) if e.code.is_none() => {
                        return family_of_our_version(id, version);
                    }
                    NetlinkPayload::Error(e) if e.raw_code() == -libc::ENOENT => {
                        return Err(KmodError::NotLoaded);
                    }
                    NetlinkPayload::Error(e) => {
                        return Err(KmodError::Refused(Refusal {
                            what: "the family lookup",
                            errno: e.to_io(),
                            extack: netlink::extack_message(msg.header.flags, &e.header),
                        }));
                    }
                    _ => {}
                }
            }
        }
    }

    fn request(&mut self, command: u8, attrs: Vec<IcmpmonAttr>) -> Result<u32, KmodError> {
        let mut genl = GenlMessage::from_payload(IcmpmonMsg::new(command, attrs));
        genl.set_resolved_family_id(self.family_id);
        self.send(NetlinkMessage::from(genl))
    }

    fn recv(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.sock.recv(&mut self.buf, 0).map(|_| ())
    }

    /// Receives one datagram and decodes its messages; a socket overrun
    /// (ENOBUFS) is a message too.
    fn receive(&mut self) -> io::Result<Vec<Incoming>> {
        match self.recv() {
            Ok(()) => Ok(self.incoming().collect()),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(vec![Incoming::Overrun]),
            Err(e) => Err(e),
        }
    }

    /// Decodes the messages of the last datagram received.
    fn incoming(&self) -> impl Iterator<Item = Incoming> + '_ {
        netlink::datagram_messages(&self.buf).map(|bytes| {
            let Ok(msg) = NetlinkMessage::<GenlMessage<IcmpmonMsg>>::deserialize(bytes) else {
                return Incoming::Undecodable;
            };
            let seq = msg.header.sequence_number;
            let flags = msg.header.flags;
            match msg.payload {
                NetlinkPayload::Error(e) => Incoming::Done(
                    seq,
                    e.code.map(|_| Refusal {
                        what: "a request",
                        errno: e.to_io(),
                        extack: netlink::extack_message(flags, &e.header),
                    }),
                ),
                NetlinkPayload::InnerMessage(m) if m.family_id() == self.family_id => {
                    classify(m.payload)
                }
                _ => Incoming::Other,
            }
        })
    }

    /// Sends a request and waits for its ACK, passing on any other
    /// icmpmon message (records still arriving) to `other`.
    fn transact(
        &mut self,
        what: &'static str,
        command: u8,
        attrs: Vec<IcmpmonAttr>,
        other: &mut dyn FnMut(Incoming),
    ) -> Result<(), KmodError> {
        let seq = self.request(command, attrs)?;
        // One deadline for the answer, however much else keeps arriving.
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !netlink::readable_within(&self.sock, left)? {
                return Err(KmodError::Timeout(what));
            }
            let mut result = None;
            for msg in self.receive()? {
                match msg {
                    Incoming::Done(s, refusal) if s == seq => result = Some(refusal),
                    other_msg => other(other_msg),
                }
            }
            match result {
                None => continue,
                Some(None) => return Ok(()),
                Some(Some(mut r)) => {
                    r.what = what;
                    return Err(match r.errno() {
                        Some(libc::EPERM) if command == cmd::REGISTER => {
                            KmodError::NeedsCapNetAdmin
                        }
                        Some(libc::EBUSY) if command == cmd::REGISTER => KmodError::Busy,
                        _ => KmodError::Refused(r),
                    });
                }
            }
        }
    }

    /// Reads the module's counters for this network namespace.
    pub fn stats(&mut self) -> Result<KmodStats, KmodError> {
        let mut stats = None;
        self.transact("the STATS request", cmd::STATS, vec![], &mut |m| {
            if let Incoming::Stats(s) = m {
                stats = Some(s);
            }
        })?;
        stats.ok_or(KmodError::Timeout("the STATS request"))
    }

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

/// The family id from a lookup's answer, if the module speaks our protocol
/// version (version 1 modules are refused: see `proto`).
fn family_of_our_version(id: Option<u16>, version: Option<u32>) -> Result<u16, KmodError> {
    match (id, version) {
        (None, _) => Err(KmodError::NotLoaded),
        (Some(id), Some(v)) if v == u32::from(abi::GENL_VERSION) => Ok(id),
        (Some(_), v) => Err(KmodError::WrongVersion(v)),
    }
}

fn classify(msg: IcmpmonMsg) -> Incoming {
    match msg.cmd {
        cmd::RECORDS => {
            let (mut seq, mut lost, mut data) = (None, 0, None);
            for a in msg.attrs {
                match a {
                    IcmpmonAttr::Seq(s) => seq = Some(s),
                    IcmpmonAttr::Lost(l) => lost = l,
                    IcmpmonAttr::Records(d) => data = Some(d),
                    _ => {}
                }
            }
            // A batch without its sequence number or records is damaged,
            // and counted as such, not passed over.
            match (seq, data) {
                (Some(seq), Some(data)) => Incoming::Records { seq, lost, data },
                _ => Incoming::Undecodable,
            }
        }
        cmd::BYE => Incoming::Bye(
            msg.attrs
                .iter()
                .find_map(|a| match a {
                    IcmpmonAttr::ByeReason(r) => Some(*r),
                    _ => None,
                })
                .unwrap_or(0),
        ),
        cmd::STATS => Incoming::Stats(KmodStats::from_attrs(&msg.attrs)),
        // Our family, a command this version does not know.
        _ => Incoming::Undecodable,
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

        let mut batch = Vec::new();
        for rec in abi::records(data) {
            match rec {
                Ok((rec, bytes)) => batch.push(RawPacket {
                    ts_ns: rec.ts_real_ns,
                    mono_ns: Some(rec.ts_mono_ns),
                    direction: match rec.hook {
                        abi::HOOK_PRE_ROUTING => Direction::In,
                        abi::HOOK_LOCAL_OUT => Direction::Out,
                        _ => Direction::Unknown,
                    },
                    ifindex: rec.ifindex,
                    orig_len: rec.origlen,
                    data: bytes.to_vec(),
                }),
                Err(e) => {
                    tracing::warn!("{e}");
                    c.bad_batches.fetch_add(1, Relaxed);
                }
            }
        }
        c.records.fetch_add(batch.len() as u64, Relaxed);
        sink.send(batch);
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
            Incoming::Bye(reason) => Some(SourceEnd::Ended(match reason {
                abi::BYE_UNLOAD => "the icmpmon kernel module was unloaded".into(),
                r => format!("the kernel ended the subscription (BYE reason {r})"),
            })),
            Incoming::Stats(s) if self.probe.is_some() && !s.subscribed => Some(SourceEnd::Ended(
                "the icmpmon kernel module no longer has our subscription \
                     (reloaded, and its BYE was lost)"
                    .into(),
            )),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_module_is_refused_with_instructions() {
        assert_eq!(family_of_our_version(Some(30), Some(2)).unwrap(), 30);
        assert!(matches!(
            family_of_our_version(None, None),
            Err(KmodError::NotLoaded)
        ));
        let err = family_of_our_version(Some(30), Some(1)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("speaks protocol version 1"), "{text}");
        assert!(text.contains("this icmpmon speaks version 2"), "{text}");
        assert!(text.contains("sudo rmmod icmpmon"), "{text}");
        assert!(text.contains("sudo modprobe icmpmon"), "{text}");
        let none = family_of_our_version(Some(30), None)
            .unwrap_err()
            .to_string();
        assert!(none.contains("speaks protocol version unknown"), "{none}");
    }

    #[test]
    fn stats_from_attrs() {
        let s = KmodStats::from_attrs(&[
            IcmpmonAttr::Counter(attr::STAT_SEEN, 10),
            IcmpmonAttr::Counter(attr::STAT_DELIVERED, 8),
            IcmpmonAttr::Counter(attr::STAT_LOST_NOBUFS, 2),
            IcmpmonAttr::Counter(attr::STAT_LOST_OTHER, 3),
            IcmpmonAttr::Subscribers(1),
            IcmpmonAttr::Subscribed(true),
        ]);
        assert_eq!(
            (s.seen, s.delivered, s.lost_nobufs, s.lost_other),
            (10, 8, 2, 3)
        );
        assert_eq!((s.subscribers, s.subscribed), (1, true));
    }
}

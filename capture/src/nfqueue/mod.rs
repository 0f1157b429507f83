//! The module-free live source: NFQUEUE. icmpmon installs its own rules
//! (`rules`), binds the queue, copies at most `snaplen` bytes of each
//! packet and accepts every packet at once with one batch verdict per
//! receive burst.
//!
//! Why not the `nfq` crate: 0.2.5 parses attributes through raw pointers
//! without bounds checks and asserts on malformed input (a panic or worse
//! inside our capture thread), does not expose its socket (no receive
//! buffer sizing, no poll with a timeout for a clean stop) and has no batch
//! verdicts. This client is the same netlink-sys + netlink-packet-core
//! stack as the kernel-module source, with every length checked.

use crate::source::{CaptureError, Counters, Source, SourceEnd};
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use netlink_packet_core::{
    DefaultNla, ErrorBuffer, NetlinkBuffer, NetlinkMessage, NlasIterator, NLMSG_ERROR, NLM_F_ACK,
    NLM_F_REQUEST,
};

use crate::netlink::{self, Acked, NetfilterSocket, Refusal, Wait};
use crate::pipeline::{PacketSink, Stop};
use crate::rules::{self, Answer, Handoff, Ledger, Privileged, Request, Rules, Target};
use icmpmon_core::event::{Direction, RawPacket};
pub(crate) use request::verdict_message;
use request::{request_message, NfqRequest, NFNL_SUBSYS_QUEUE};

mod request;

const NFQNL_MSG_PACKET: u16 = libc::NFQNL_MSG_PACKET as u16;
const NFQNL_MSG_CONFIG: u16 = libc::NFQNL_MSG_CONFIG as u16;
const NFQA_PACKET_HDR: u16 = libc::NFQA_PACKET_HDR as u16;
const NFQA_TIMESTAMP: u16 = libc::NFQA_TIMESTAMP as u16;
const NFQA_IFINDEX_INDEV: u16 = libc::NFQA_IFINDEX_INDEV as u16;
const NFQA_IFINDEX_OUTDEV: u16 = libc::NFQA_IFINDEX_OUTDEV as u16;
const NFQA_PAYLOAD: u16 = libc::NFQA_PAYLOAD as u16;
const NFQA_CAP_LEN: u16 = libc::NFQA_CAP_LEN as u16;
const NFQA_CFG_CMD: u16 = libc::NFQA_CFG_CMD as u16;
const NFQA_CFG_PARAMS: u16 = libc::NFQA_CFG_PARAMS as u16;
const NFQA_CFG_QUEUE_MAXLEN: u16 = libc::NFQA_CFG_QUEUE_MAXLEN as u16;
const NFQA_CFG_MASK: u16 = libc::NFQA_CFG_MASK as u16;
const NFQA_CFG_FLAGS: u16 = libc::NFQA_CFG_FLAGS as u16;
const NFQNL_CFG_CMD_BIND: u8 = libc::NFQNL_CFG_CMD_BIND as u8;
const NFQNL_CFG_CMD_UNBIND: u8 = libc::NFQNL_CFG_CMD_UNBIND as u8;
const NFQNL_COPY_PACKET: u8 = libc::NFQNL_COPY_PACKET as u8;
const NFQA_CFG_F_FAIL_OPEN: u32 = libc::NFQA_CFG_F_FAIL_OPEN as u32;
const NF_INET_PRE_ROUTING: u8 = libc::NF_INET_PRE_ROUTING as u8;
const NF_INET_FORWARD: u8 = libc::NF_INET_FORWARD as u8;
const NF_INET_LOCAL_OUT: u8 = libc::NF_INET_LOCAL_OUT as u8;
/// Packets the kernel holds for us before fail-open lets them through.
const QUEUE_MAXLEN: u32 = 8192;
/// The longest the stop drains what is still queued.
const DRAIN_AT_STOP: std::time::Duration = std::time::Duration::from_secs(2);
/// Packets drained per burst before a verdict is sent.
const BURST: usize = 256;
/// After a burst, keep polling without sleeping this long: each queued
/// packet waits for our verdict, and a sleep/wake-up per packet would set
/// the pace of ping-pong traffic (measured: 2.4x the flood rate kept).
/// Costs CPU only while packets flow.
const SPIN: Duration = Duration::from_micros(200);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

pub const DEFAULT_QUEUE: u16 = 7707;

#[derive(Debug, thiserror::Error)]
pub enum NfqError {
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error("cannot remove the queue rules: {0}")]
    RulesLeft(rules::RemoveError),
    #[error(
        "NFQUEUE needs CAP_NET_ADMIN in this network namespace (to bind the queue and \
         install its rules): run icmpmon with sudo"
    )]
    NeedsCapNetAdmin,
    #[error("NFQUEUE queue {0} is bound by another program: choose another with --queue-num")]
    QueueBusy(u16),
    #[error(transparent)]
    Refused(Refusal),
    #[error("no answer from the kernel to {0} within {REPLY_TIMEOUT:?}")]
    Timeout(&'static str),
    #[error("netfilter netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The rules helper, which sends the verdicts once icmpmon holds no
    /// capability, is gone: packets now pass unseen (fail-open).
    #[error("the rules helper stopped answering ({0}): the queue's packets pass unseen until the rules go")]
    Helper(io::Error),
}

/// What the receive side saw; shared with the summary.
#[derive(Debug, Default)]
pub struct NfqCounters {
    pub packets: AtomicU64,
    /// Packet ids skipped: queued while the queue was full or our socket
    /// buffer overflowed (fail-open let them through unseen).
    pub queue_lost: AtomicU64,
    /// ENOBUFS on receive.
    pub socket_overruns: AtomicU64,
    /// Messages without a usable packet header, or not packets.
    pub bad_messages: AtomicU64,
    /// Verdicts the kernel answered with an error.
    pub verdict_errors: AtomicU64,
}

/// One packet as the kernel queued it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Queued<'a> {
    id: u32,
    packet: RawPacket<'a>,
}

/// Parses an NFQNL_MSG_PACKET payload (after the netlink header).
/// `None` when it has no packet header; the packet still gets its verdict
/// with the next batch.
fn parse_packet(payload: &[u8]) -> Option<Queued<'_>> {
    let attrs = payload.get(4..)?; // skip nfgenmsg
    let (mut id, mut hook) = (None, 0);
    let (mut data, mut cap_len, mut ts_ns) = (&[][..], None, None);
    let (mut indev, mut outdev) = (0, 0);
    let be32 = |v: &[u8]| {
        v.get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    for nla in NlasIterator::new(attrs) {
        let nla = nla.ok()?;
        let kind = nla.kind() & 0x3fff;
        let v = netlink::nla_value(nla);
        match kind {
            NFQA_PACKET_HDR if v.len() >= 7 => {
                id = be32(v);
                hook = v[6];
            }
            NFQA_PAYLOAD => data = v,
            NFQA_CAP_LEN => cap_len = be32(v),
            NFQA_IFINDEX_INDEV => indev = be32(v).unwrap_or(0),
            NFQA_IFINDEX_OUTDEV => outdev = be32(v).unwrap_or(0),
            NFQA_TIMESTAMP => ts_ns = netlink::timestamp_ns(v),
            _ => {}
        }
    }
    let (direction, ifindex) = match hook {
        NF_INET_LOCAL_OUT => (Direction::Out, outdev),
        NF_INET_PRE_ROUTING | NF_INET_FORWARD => (Direction::In, indev),
        _ => (Direction::Unknown, indev.max(outdev)),
    };
    // Locally sent packets carry no timestamp: take the time now.
    let ts_ns = ts_ns.unwrap_or_else(icmpmon_core::event::now_ns);
    Some(Queued {
        id: id?,
        packet: RawPacket {
            drop: None,
            mono_ns: None,
            ts_ns,
            direction,
            ifindex,
            orig_len: cap_len.unwrap_or(data.len() as u32),
            data,
        },
    })
}

/// The kernel's list of bound queues (first column: the queue number).
const BOUND_QUEUES: &str = "/proc/net/netfilter/nfnetlink_queue";

/// A bound queue with its rules installed.
#[derive(Debug)]
pub struct NfqueueSource {
    nl: NetfilterSocket,
    queue: u16,
    /// Dropped (rules removed) before the last drain at stop.
    rules: Option<Rules>,
    counters: Arc<NfqCounters>,
    next_id: u32,
    /// Once the monitor holds no capability: what sends the verdicts.
    privileged: Option<Arc<dyn Privileged>>,
}

impl NfqueueSource {
    /// Binds queue `queue`, then installs the rules that feed it (recorded
    /// in `ledger`).
    pub fn open(
        queue: u16,
        snaplen: u32,
        socket_buffer: usize,
        ledger: &Ledger,
    ) -> Result<Self, NfqError> {
        let mut src = Self {
            nl: NetfilterSocket::open(socket_buffer)?,
            queue,
            rules: None,
            counters: Arc::default(),
            next_id: 1,
            privileged: None,
        };
        let cmd = |c: u8| DefaultNla::new(NFQA_CFG_CMD, vec![c, 0, 0, 0]);
        src.request(
            "binding the queue",
            NFQNL_MSG_CONFIG,
            vec![cmd(NFQNL_CFG_CMD_BIND)],
        )
        .map_err(|e| match e {
            // The kernel says EPERM both without CAP_NET_ADMIN and when
            // another socket owns the queue.
            NfqError::Refused(ref r) => match r.errno() {
                Some(libc::EPERM)
                    if crate::privilege::effective(crate::privilege::Capability::CAP_NET_ADMIN) =>
                {
                    NfqError::QueueBusy(queue)
                }
                Some(libc::EPERM) => NfqError::NeedsCapNetAdmin,
                Some(libc::EBUSY) => NfqError::QueueBusy(queue),
                _ => e,
            },
            e => e,
        })?;
        let mut params = snaplen.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_PACKET);
        src.request(
            "configuring the queue",
            NFQNL_MSG_CONFIG,
            vec![
                DefaultNla::new(NFQA_CFG_PARAMS, params),
                DefaultNla::new(NFQA_CFG_QUEUE_MAXLEN, QUEUE_MAXLEN.to_be_bytes().to_vec()),
                // Fail open: a full queue lets packets through unseen.
                DefaultNla::new(NFQA_CFG_FLAGS, NFQA_CFG_F_FAIL_OPEN.to_be_bytes().to_vec()),
                DefaultNla::new(NFQA_CFG_MASK, NFQA_CFG_F_FAIL_OPEN.to_be_bytes().to_vec()),
            ],
        )?;
        let rules = Rules::install(
            Target::Queue(queue),
            &|q| {
                // Unreadable: assume bound, so that another instance's rules
                // are never taken for stale.
                netlink::bound_in_proc(BOUND_QUEUES, q, true)
            },
            ledger,
        )?;
        src.rules = Some(rules);
        Ok(src)
    }

    pub fn counters(&self) -> Arc<NfqCounters> {
        Arc::clone(&self.counters)
    }

    pub fn describe(&self) -> String {
        let rules = self.rules.as_ref().map_or("rules removed", Rules::describe);
        format!("nfqueue (queue {}, {rules})", self.queue)
    }

    fn message(&self, msg: u16, attrs: Vec<DefaultNla>, flags: u16) -> NetlinkMessage<NfqRequest> {
        request_message(self.queue, msg, attrs, flags)
    }

    /// A config request and its ACK. Packets cannot arrive before the
    /// rules exist, so nothing else is on the socket yet.
    fn request(
        &mut self,
        what: &'static str,
        msg: u16,
        attrs: Vec<DefaultNla>,
    ) -> Result<(), NfqError> {
        let msg = self.message(msg, attrs, NLM_F_REQUEST | NLM_F_ACK);
        match self.nl.request(what, msg, REPLY_TIMEOUT)? {
            Acked::Ok => Ok(()),
            Acked::Refused(r) => Err(NfqError::Refused(r)),
            Acked::TimedOut => Err(NfqError::Timeout(what)),
        }
    }

    /// Receives what is waiting (up to a burst), hands it on, and accepts
    /// it all with one batch verdict. Returns how many packets it took.
    fn drain(&mut self, sink: &PacketSink) -> Result<usize, NfqError> {
        let mut batch = sink.batch();
        let mut last_id = None;
        while batch.len() < BURST {
            let Some(datagram) = self.nl.try_recv(&self.counters.socket_overruns)? else {
                break;
            };
            for bytes in netlink::datagram_messages(datagram) {
                let Ok(nl) = NetlinkBuffer::new_checked(bytes) else {
                    self.counters.bad_messages.fetch_add(1, Relaxed);
                    continue;
                };
                if nl.message_type() == NLMSG_ERROR {
                    // Verdicts go without an ACK: an error message is a
                    // verdict the kernel refused (its packets are dropped
                    // by the kernel after the queue's timeout, or leaked
                    // to fail-open). Counted, and logged once.
                    let code = ErrorBuffer::new_checked(nl.payload())
                        .ok()
                        .and_then(|e| e.code());
                    if let Some(code) = code {
                        if self.counters.verdict_errors.fetch_add(1, Relaxed) == 0 {
                            tracing::warn!(
                                "the kernel refused a verdict: {}",
                                io::Error::from_raw_os_error(-code.get())
                            );
                        }
                    }
                    continue;
                }
                if nl.message_type() != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
                    self.counters.bad_messages.fetch_add(1, Relaxed);
                    continue;
                }
                let Some(q) = parse_packet(nl.payload()) else {
                    self.counters.bad_messages.fetch_add(1, Relaxed);
                    continue;
                };
                // Ids count up per queue: a gap is a packet we never saw.
                if q.id > self.next_id {
                    self.counters
                        .queue_lost
                        .fetch_add(u64::from(q.id - self.next_id), Relaxed);
                }
                self.next_id = q.id.wrapping_add(1);
                last_id = Some(q.id);
                batch.push(q.packet);
            }
        }
        if let Some(id) = last_id {
            // Accepts every queued packet with an id up to this one. The
            // kernel checks CAP_NET_ADMIN on each: without it, the rules
            // helper sends it.
            match &self.privileged {
                None => {
                    rustix::net::send(
                        self.nl.socket(),
                        &verdict_message(self.queue, id),
                        rustix::net::SendFlags::empty(),
                    )
                    .map_err(io::Error::from)?;
                }
                Some(p) => match p.post(Request::Verdict { id }).map_err(NfqError::Helper)? {
                    Ok(()) => {}
                    Err(Answer::Refused(errno)) => {
                        return Err(io::Error::from_raw_os_error(errno).into());
                    }
                    Err(other) => {
                        return Err(NfqError::Helper(io::Error::other(format!(
                            "the rules helper answered a verdict with {other:?}"
                        ))))
                    }
                },
            }
        }
        let n = batch.len();
        self.counters.packets.fetch_add(n as u64, Relaxed);
        sink.send(batch);
        Ok(n)
    }

    /// Receives until `stop`; then stops the rules queuing (emptied, or
    /// removed), accepts what is still queued, removes the rules, and
    /// unbinds.
    pub fn run(mut self, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, NfqError> {
        while netlink::wait_readable(self.nl.socket(), None, Some(stop))? != Wait::Stopped {
            if self.drain(&sink)? > 0 {
                let mut last = std::time::Instant::now();
                // A flood keeps this loop busy: it must see the stop too.
                while last.elapsed() < SPIN && !stop.is_set() {
                    if self.drain(&sink)? > 0 {
                        last = std::time::Instant::now();
                    }
                    std::hint::spin_loop();
                }
            }
        }
        // No new packets, hooks kept: what is queued gets its verdict, and
        // only then go the hooks (the kernel drops what they still hold).
        // Where the rules cannot be emptied, they go first.
        let emptied = self.rules.as_mut().is_some_and(Rules::stop_sending);
        let early = if emptied {
            None
        } else {
            self.rules.take().map(Rules::remove)
        };
        // Bounded: should rules still queue (their removal failed), a flood
        // must not keep the stop waiting.
        let draining = std::time::Instant::now();
        let drained = (|| {
            while self.drain(&sink)? > 0 && draining.elapsed() < DRAIN_AT_STOP {}
            Ok::<_, NfqError>(())
        })();
        let queued = early.or_else(|| self.rules.take().map(Rules::remove));
        // Rules left behind are the worse news: reported first.
        let hits = match queued {
            Some(Err(e)) => return Err(NfqError::RulesLeft(e)),
            Some(Ok(hits)) => Some(hits),
            None => None,
        };
        drained?;
        // Everything the rules queued and we never saw: the kernel's drops
        // and fail-open passes (which leave no id gap).
        if let Some(hits) = hits {
            let seen = self.counters.packets.load(Relaxed);
            let lost = hits.saturating_sub(seen);
            self.counters.queue_lost.fetch_max(lost, Relaxed);
        }
        // Without CAP_NET_ADMIN the kernel refuses the unbind: the rules
        // helper lets its copy of the socket go, and closing this one (when
        // the source is dropped) unbinds the queue.
        match &self.privileged {
            Some(p) => {
                let _ = p.call(Request::Release);
            }
            None => {
                let cmd = DefaultNla::new(NFQA_CFG_CMD, vec![NFQNL_CFG_CMD_UNBIND, 0, 0, 0]);
                let unbind = self.message(NFQNL_MSG_CONFIG, vec![cmd], NLM_F_REQUEST);
                self.nl.send(unbind)?;
            }
        }
        Ok(SourceEnd::Stopped)
    }
}

impl From<NfqError> for CaptureError {
    fn from(e: NfqError) -> Self {
        CaptureError::new(e)
    }
}

impl Source for NfqueueSource {
    fn notices(&mut self) -> Vec<String> {
        self.rules
            .as_mut()
            .map_or_else(Vec::new, Rules::take_notices)
    }
    fn name(&self) -> &'static str {
        "nfqueue"
    }
    fn describe(&self) -> String {
        self.describe()
    }
    /// NFQUEUE messages need CAP_NET_ADMIN; so does removing the rules.
    fn capabilities_kept(&self) -> &'static [caps::Capability] {
        rules::CAPABILITIES
    }
    fn handoff(&self) -> Option<(Handoff, std::os::fd::BorrowedFd<'_>)> {
        let h = self.rules.as_ref()?.handoff()?;
        Some((h, self.nl.socket().as_fd()))
    }
    fn hand_over(&mut self, helper: Arc<dyn Privileged>) {
        self.privileged = Some(helper);
    }
    fn counters(&self) -> Arc<dyn Counters> {
        self.counters()
    }
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, CaptureError> {
        Ok(NfqueueSource::run(*self, sink, stop)?)
    }
}

impl Counters for NfqCounters {
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

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkSerializable;
    use proptest::prelude::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn packet_msg(id: u32, hook: u8) -> Vec<u8> {
        let mut m = vec![2, 0, 0x1e, 0x1b];
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, hook]);
        m.extend(nla(NFQA_PACKET_HDR, &hdr));
        m.extend(nla(NFQA_IFINDEX_OUTDEV, &3u32.to_be_bytes()));
        m.extend(nla(NFQA_CAP_LEN, &1500u32.to_be_bytes()));
        m.extend(nla(NFQA_PAYLOAD, &[0x45, 0, 0, 20]));
        let mut ts = 5u64.to_be_bytes().to_vec();
        ts.extend_from_slice(&7u64.to_be_bytes());
        m.extend(nla(NFQA_TIMESTAMP, &ts));
        m
    }

    #[test]
    fn packet_message_fields() {
        let m = packet_msg(42, NF_INET_LOCAL_OUT);
        let q = parse_packet(&m).unwrap();
        assert_eq!(q.id, 42);
        assert_eq!(q.packet.direction, Direction::Out);
        assert_eq!(q.packet.ifindex, 3);
        assert_eq!(q.packet.orig_len, 1500);
        assert_eq!(q.packet.data, [0x45, 0, 0, 20]);
        assert_eq!(q.packet.ts_ns, 5_000_007_000);
    }

    #[test]
    fn no_header_no_packet() {
        let mut m = vec![2, 0, 0, 0];
        m.extend(nla(NFQA_PAYLOAD, &[1, 2, 3]));
        assert_eq!(parse_packet(&m), None);
        assert_eq!(parse_packet(&[1, 2]), None);
    }

    #[test]
    fn request_layout() {
        let req = NfqRequest {
            msg: NFQNL_MSG_CONFIG,
            queue: 0x0102,
            attrs: vec![DefaultNla::new(
                NFQA_CFG_CMD,
                vec![NFQNL_CFG_CMD_BIND, 0, 0, 0],
            )],
        };
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        assert_eq!(req.message_type(), 0x0302);
        assert_eq!(buf, [0, 0, 1, 2, 8, 0, 1, 0, 1, 0, 0, 0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn arbitrary_messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_packet(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(pos in 0usize..80, val in any::<u8>(), cut in 0usize..80) {
            let mut m = packet_msg(1, 0);
            let p = pos % m.len();
            m[p] = val;
            m.truncate(m.len() - cut.min(m.len()));
            let _ = parse_packet(&m);
        }
    }
}

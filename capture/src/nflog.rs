//! Passive capture through the netfilter log (nfnetlink_log): icmpmon's own
//! rules (`rules`) copy each ICMP packet to its log groups at the module's
//! hooks (prerouting = `in`, forwarded included; output = `out`), after
//! defragmentation. Traffic never waits for icmpmon; without it, the rules
//! log nothing.
//!
//! Two groups: `in` packets go to group N, batched (a message per
//! `threshold` packets or per `timeout`), and carry the kernel's receive
//! timestamp. NFLOG stamps nothing at output, so an `out` packet's time is
//! when icmpmon receives it; group N+1 sends those one at a time, so that
//! the time is the send time plus a wake-up (tens of µs), not plus a batch
//! timeout. Under a flood (over 8 000 `out` packets/s) per-packet messages
//! would cost half the flood's rate, so the `out` group then batches what
//! arrives in 250 µs: an `out` time is late by a wake-up (tens of µs), by
//! at most 250 µs under a flood, and, for the last packets of a burst, by
//! up to the kernel's 10 ms timer. Both groups number their packets
//! (NFULA_SEQ): a gap is a batch the socket could not take (ENOBUFS), and
//! its size is counted lost once a later packet shows it. At the end, rule
//! hits minus packets seen and counted is what vanished without a gap
//! (the tail of a loss, or a buffer the kernel could not allocate).
//!
//! Config messages come from `netlink-packet-netfilter`. Packets are parsed
//! here with `NlasIterator`, as for NFQUEUE: that crate's packet header and
//! timestamp have private fields, and one bad attribute fails its whole
//! message.

use crate::source::{CaptureError, Counters, Source, SourceEnd};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkBuffer, NlasIterator, NLM_F_REQUEST};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigFlags, ConfigMode, ConfigNla, Timeout,
};
use netlink_packet_netfilter::NetfilterProtoFamily;

use crate::netlink::{self, Acked, NetfilterSocket, Refusal, Wait};
use crate::pipeline::{PacketSink, Stop};
use crate::privilege::Capability::CAP_NET_ADMIN;
use crate::rules::{self, Ledger, Rules, Target};
use icmpmon_core::event::{Direction, RawPacket};

const MSG_PACKET: u16 = ((libc::NFNL_SUBSYS_ULOG as u16) << 8) | libc::NFULNL_MSG_PACKET as u16;
const NFULA_PACKET_HDR: u16 = libc::NFULA_PACKET_HDR as u16;
const NFULA_TIMESTAMP: u16 = libc::NFULA_TIMESTAMP as u16;
const NFULA_IFINDEX_INDEV: u16 = libc::NFULA_IFINDEX_INDEV as u16;
const NFULA_IFINDEX_OUTDEV: u16 = libc::NFULA_IFINDEX_OUTDEV as u16;
const NFULA_PAYLOAD: u16 = libc::NFULA_PAYLOAD as u16;
const NFULA_SEQ: u16 = libc::NFULA_SEQ as u16;
const NF_INET_PRE_ROUTING: u8 = libc::NF_INET_PRE_ROUTING as u8;
const NF_INET_LOCAL_OUT: u8 = libc::NF_INET_LOCAL_OUT as u8;
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// nfnetlink_log's bounds on a group's message buffer: about NLMSG_GOODSIZE
/// (a page less the skb overhead) and 128 KiB. Every message takes a buffer
/// this size, one packet or a batch.
const NL_BUFSIZ_MIN: u32 = 4096;
const NL_BUFSIZ_MAX: u32 = 131_072;
/// How late a batched `out` packet's time may be: the `out` group batches
/// only as many packets as arrive in this time (see `adapt_out`).
const OUT_BATCH_SPAN: Duration = Duration::from_micros(250);
/// How often the `out` rate is measured.
const OUT_RATE_WINDOW: Duration = Duration::from_millis(100);
/// Groups tried, two at a time from the default, when none is asked for.
const GROUP_TRIES: u16 = 64;

pub const DEFAULT_GROUP: u16 = 7710;
pub const THRESHOLD_DEFAULT: u32 = 64;
pub const TIMEOUT_MS_DEFAULT: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NflogOptions {
    /// The `in` group (`out` is the next); `None`: the first free pair
    /// from `DEFAULT_GROUP`.
    pub group: Option<u16>,
    pub snaplen: u32,
    pub socket_buffer: usize,
    /// `in` packets per message.
    pub threshold: u32,
    /// Longest wait of a partial `in` batch, in ms (the kernel counts in
    /// hundredths of a second).
    pub timeout_ms: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error("cannot remove the log rules: {0}")]
    RulesLeft(rules::RemoveError),
    #[error(
        "NFLOG needs CAP_NET_ADMIN in this network namespace (to bind log groups and \
         install its rules): run icmpmon with sudo, or use --source packet (CAP_NET_RAW)"
    )]
    NeedsCapNetAdmin,
    #[error("NFLOG group {0} is bound by another program: choose another with --nflog-group")]
    GroupBusy(u16),
    #[error("no free pair of NFLOG groups from {0} on: choose one with --nflog-group")]
    NoFreeGroup(u16),
    #[error(transparent)]
    Refused(Refusal),
    #[error("no answer from the kernel to {0} within {REPLY_TIMEOUT:?}")]
    Timeout(&'static str),
    #[error("netfilter netlink socket: {0}")]
    Io(#[from] io::Error),
}

/// What the receive side saw; shared with the summary.
#[derive(Debug, Default)]
pub struct NflogCounters {
    pub packets: AtomicU64,
    /// Packets missing from the groups' sequence numbers.
    pub sequence_lost: AtomicU64,
    /// Matched by the rules, never seen, and no gap: counted at the end.
    pub unaccounted: AtomicU64,
    /// ENOBUFS on receive (what they lost shows as sequence gaps).
    pub socket_overruns: AtomicU64,
    /// How long `out` packets went in batches (a flood), in ms: their
    /// times, and the RTTs of pings this host sent, were up to
    /// `OUT_BATCH_SPAN` late then.
    pub out_batched_ms: AtomicU64,
    pub bad_messages: AtomicU64,
}

/// The kernel's list of bound log groups (first column: the group).
const BOUND_GROUPS: &str = "/proc/net/netfilter/nfnetlink_log";

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Logged {
    group: u16,
    seq: Option<u32>,
    packet: RawPacket,
}

/// The packet's length on the wire, from its IP header (NFLOG sends no
/// original length).
fn ip_length(data: &[u8]) -> Option<u32> {
    let be16 = |at: usize| {
        Some(u32::from(u16::from_be_bytes([
            *data.get(at)?,
            *data.get(at + 1)?,
        ])))
    };
    match data.first()? >> 4 {
        4 => be16(2),
        6 => Some(40 + be16(4)?),
        _ => None,
    }
}

/// Parses an NFULNL_MSG_PACKET payload (after the netlink header).
fn parse_packet(payload: &[u8], received_ns: u64) -> Option<Logged> {
    let group = u16::from_be_bytes(payload.get(2..4)?.try_into().ok()?);
    let attrs = payload.get(4..)?; // nfgenmsg
    let (mut hook, mut seq, mut ts_ns) = (None, None, None);
    let (mut data, mut indev, mut outdev) = (None, 0, 0);
    let be32 = |v: &[u8]| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?));
    for nla in NlasIterator::new(attrs) {
        let nla = nla.ok()?;
        let v = nla.value();
        match nla.kind() & 0x3fff {
            NFULA_PACKET_HDR if v.len() >= 3 => hook = Some(v[2]),
            NFULA_PAYLOAD => data = Some(v.to_vec()),
            NFULA_IFINDEX_INDEV => indev = be32(v).unwrap_or(0),
            NFULA_IFINDEX_OUTDEV => outdev = be32(v).unwrap_or(0),
            NFULA_SEQ => seq = be32(v),
            NFULA_TIMESTAMP => ts_ns = netlink::timestamp_ns(v),
            _ => {}
        }
    }
    let (direction, ifindex) = match hook? {
        NF_INET_LOCAL_OUT => (Direction::Out, outdev),
        NF_INET_PRE_ROUTING => (Direction::In, indev),
        _ => (Direction::Unknown, indev.max(outdev)),
    };
    let data = data?;
    Some(Logged {
        group,
        seq,
        packet: RawPacket {
            // Output packets carry no timestamp: their group is unbatched,
            // so the receive time is close behind the send time.
            ts_ns: ts_ns.unwrap_or(received_ns),
            mono_ns: None,
            direction,
            ifindex,
            orig_len: ip_length(&data).unwrap_or(data.len() as u32),
            data,
        },
    })
}

/// Packets missing before `logged` in its group's numbering, which count
/// up from 0 per group (`next`: the number expected per group, in and out
/// of the pair from `base`).
fn count_gap(next: &mut [Option<u32>; 2], base: u16, logged: &Logged) -> u64 {
    let Some(seq) = logged.seq else { return 0 };
    let slot = match logged.group.wrapping_sub(base) {
        0 => 0,
        1 => 1,
        _ => return 0,
    };
    let gap = seq.wrapping_sub(next[slot].unwrap_or(0));
    next[slot] = Some(seq.wrapping_add(1));
    // A number before the expected one (reordered) is no gap.
    if gap < u32::MAX / 2 {
        u64::from(gap)
    } else {
        0
    }
}

/// A message buffer for a batch of `threshold` packets, within the
/// kernel's bounds.
fn batch_bytes(threshold: u32, snaplen: u32) -> u32 {
    threshold
        .saturating_mul(snaplen + 128)
        .clamp(NL_BUFSIZ_MIN, NL_BUFSIZ_MAX)
}

/// The `out` group's batch for `rate` packets/s: what arrives within
/// `OUT_BATCH_SPAN`, at most `max`; 1 (unbatched) below 8 000/s.
fn out_threshold(rate: f64, max: u32) -> u32 {
    let n = rate * OUT_BATCH_SPAN.as_secs_f64();
    (n as u32).clamp(1, max.max(1))
}

/// Bound groups with their rules installed.
#[derive(Debug)]
pub struct NflogSource {
    nl: NetfilterSocket,
    group: u16,
    /// Dropped (rules removed) before the last drain at stop.
    rules: Option<Rules>,
    /// Stale rule sets removed at start, for `Source::notices`.
    stale: Vec<String>,
    counters: Arc<NflogCounters>,
    /// The next sequence number expected per group (in, out).
    next_seq: [Option<u32>; 2],
    timeout: Duration,
    /// The `out` group's batch now, its most, and the packets seen in the
    /// rate window since `window`.
    out_batch: u32,
    max_batch: u32,
    snaplen: u32,
    out_seen: u64,
    window: Instant,
}

impl NflogSource {
    /// Binds a pair of groups, then installs the rules that feed them
    /// (recorded in `ledger`).
    pub fn open(opts: &NflogOptions, ledger: &Ledger) -> Result<Self, NflogError> {
        let nl = NetfilterSocket::open(opts.socket_buffer)?;
        // Kernels before 6.x stamp `in` packets only when some socket asked
        // for receive timestamps: this one asks.
        if let Err(e) = nix::sys::socket::setsockopt(
            nl.socket(),
            nix::sys::socket::sockopt::ReceiveTimestampns,
            &true,
        ) {
            tracing::warn!("cannot enable receive timestamps: {e}");
        }
        let timeout = Duration::from_millis(u64::from(opts.timeout_ms));
        let mut src = Self {
            nl,
            group: 0,
            rules: None,
            stale: Vec::new(),
            counters: Arc::default(),
            next_seq: [None; 2],
            timeout,
            out_batch: 1,
            max_batch: opts.threshold,
            snaplen: opts.snaplen,
            out_seen: 0,
            window: Instant::now(),
        };
        let group = match opts.group {
            Some(g) => {
                src.bind_pair(g, opts)?;
                g
            }
            None => src.bind_free_pair(opts)?,
        };
        src.group = group;
        let target = Target::Log {
            group,
            snaplen: opts.snaplen,
            threshold: opts.threshold,
        };
        // Unreadable: assume bound, so that another instance's rules are
        // never taken for stale.
        let (rules, stale) = Rules::install(
            target,
            &|g| netlink::bound_in_proc(BOUND_GROUPS, g, true),
            ledger,
        )?;
        src.stale = stale;
        src.rules = Some(rules);
        Ok(src)
    }

    /// The first pair (N, N+1) from the default that nobody has bound.
    fn bind_free_pair(&mut self, opts: &NflogOptions) -> Result<u16, NflogError> {
        for i in 0..GROUP_TRIES {
            let g = DEFAULT_GROUP.wrapping_add(2 * i);
            let bound = |g| netlink::bound_in_proc(BOUND_GROUPS, g, false);
            if bound(g) || bound(g.wrapping_add(1)) {
                continue;
            }
            match self.bind_pair(g, opts) {
                Err(NflogError::GroupBusy(_)) => continue,
                other => return other.map(|()| g),
            }
        }
        Err(NflogError::NoFreeGroup(DEFAULT_GROUP))
    }

    fn bind_pair(&mut self, group: u16, opts: &NflogOptions) -> Result<(), NflogError> {
        let hundredths = opts.timeout_ms.div_ceil(10).max(1);
        let configs = [
            (
                group,
                opts.threshold,
                hundredths,
                Some(batch_bytes(opts.threshold, opts.snaplen)),
            ),
            // `out`: one packet per message, sent at once, in the kernel's
            // default (one page) buffer; `adapt_out` batches a flood.
            (group.wrapping_add(1), 1, 0, None),
        ];
        for (i, (g, threshold, timeout, bufsiz)) in configs.into_iter().enumerate() {
            let mut config = vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(opts.snaplen).into(),
                ConfigNla::QThresh(threshold),
                Timeout::new(timeout).into(),
                ConfigFlags::SEQ.into(),
            ];
            config.extend(bufsiz.map(ConfigNla::NlBufSiz));
            let bound = self.request("binding the log group", g, config);
            if let Err(e) = bound {
                if i == 1 {
                    self.unbind(group);
                }
                // The kernel says EPERM both without CAP_NET_ADMIN and when
                // another socket has the group.
                return Err(match e {
                    NflogError::Refused(ref r) => match r.errno() {
                        Some(libc::EPERM) if crate::privilege::effective(CAP_NET_ADMIN) => {
                            NflogError::GroupBusy(g)
                        }
                        Some(libc::EPERM) => NflogError::NeedsCapNetAdmin,
                        Some(libc::EBUSY) => NflogError::GroupBusy(g),
                        _ => e,
                    },
                    e => e,
                });
            }
        }
        Ok(())
    }

    fn unbind(&mut self, group: u16) {
        let mut msg = config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![ConfigCmd::Unbind.into()],
        );
        msg.header.flags = NLM_F_REQUEST;
        let _ = self.nl.send(msg);
    }

    /// A config request and its ACK (nothing else is on the socket before
    /// the rules exist).
    fn request(
        &mut self,
        what: &'static str,
        group: u16,
        nlas: Vec<ConfigNla>,
    ) -> Result<(), NflogError> {
        let msg = config_request(NetfilterProtoFamily::Unspec, group, nlas);
        match self.nl.request(what, msg, REPLY_TIMEOUT)? {
            Acked::Ok => Ok(()),
            Acked::Refused(r) => Err(NflogError::Refused(r)),
            Acked::TimedOut => Err(NflogError::Timeout(what)),
        }
    }

    pub fn counters(&self) -> Arc<NflogCounters> {
        Arc::clone(&self.counters)
    }

    pub fn describe(&self) -> String {
        let rules = self.rules.as_ref().map_or("rules removed", Rules::describe);
        format!(
            "nflog (groups {} in, {} out, {rules})",
            self.group,
            self.group.wrapping_add(1)
        )
    }

    /// Receives what is waiting and hands it on. Returns how many packets
    /// it took.
    fn drain(&mut self, sink: &PacketSink) -> Result<usize, NflogError> {
        let mut batch = Vec::new();
        while let Some(datagram) = self.nl.try_recv(&self.counters.socket_overruns)? {
            let received_ns = icmpmon_core::event::now_ns();
            for bytes in netlink::datagram_messages(datagram) {
                let Ok(nl) = NetlinkBuffer::new_checked(bytes) else {
                    self.counters.bad_messages.fetch_add(1, Relaxed);
                    continue;
                };
                // NLMSG_DONE ends a batch; ACKs of the unbinds at the end.
                if nl.message_type() != MSG_PACKET {
                    continue;
                }
                let Some(logged) = parse_packet(nl.payload(), received_ns) else {
                    self.counters.bad_messages.fetch_add(1, Relaxed);
                    continue;
                };
                let lost = count_gap(&mut self.next_seq, self.group, &logged);
                self.counters.sequence_lost.fetch_add(lost, Relaxed);
                if logged.packet.direction == Direction::Out {
                    self.out_seen += 1;
                }
                batch.push(logged.packet);
            }
            if batch.len() >= 1024 {
                break;
            }
        }
        let n = batch.len();
        if n > 0 {
            self.counters.packets.fetch_add(n as u64, Relaxed);
            sink.send(batch);
        }
        Ok(n)
    }

    /// Sizes the `out` group's batches to its rate. Unbatched, each `out`
    /// packet costs a message and a wake-up, which under a flood takes
    /// half the flood's rate; batched, a packet's time (the receive time)
    /// is late by up to the batch's span. So a flood is batched by what
    /// arrives in `OUT_BATCH_SPAN` (with the group's timer, 10 ms, for the
    /// tail of a burst), and anything slower goes one packet at a time.
    fn adapt_out(&mut self) {
        let elapsed = self.window.elapsed();
        if elapsed < OUT_RATE_WINDOW {
            return;
        }
        if self.out_batch > 1 {
            let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            self.counters.out_batched_ms.fetch_add(ms, Relaxed);
        }
        let rate = self.out_seen as f64 / elapsed.as_secs_f64();
        let want = out_threshold(rate, self.max_batch);
        // Only a real change: halving or doubling, or back to one.
        if want != self.out_batch
            && (want == 1 || want >= 2 * self.out_batch || 2 * want <= self.out_batch)
        {
            let mut msg = config_request(
                NetfilterProtoFamily::Unspec,
                self.group.wrapping_add(1),
                vec![
                    ConfigNla::QThresh(want),
                    Timeout::new(u32::from(want > 1)).into(),
                    // A batch must fit: the kernel sends when the buffer
                    // is full too.
                    ConfigNla::NlBufSiz(batch_bytes(want, self.snaplen)),
                ],
            );
            // No ACK: an error would come back among the packets.
            msg.header.flags = NLM_F_REQUEST;
            match self.nl.send(msg) {
                Ok(_) => {
                    tracing::debug!("out group: {rate:.0} packets/s, batches of {want}");
                    self.out_batch = want;
                }
                Err(e) => tracing::warn!("cannot resize the out group's batches: {e}"),
            }
        }
        self.out_seen = 0;
        self.window = Instant::now();
    }

    /// Receives until `stop`; then removes the rules (nothing new is
    /// logged), takes the last partial batch and unbinds.
    pub fn run(mut self, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, NflogError> {
        loop {
            // Batched, the rate is checked again within a window (a burst
            // that ends must not leave the group batched).
            let wait = match self.out_batch {
                1 => None,
                _ => Some(OUT_RATE_WINDOW),
            };
            if netlink::wait_readable(self.nl.socket(), wait, Some(stop))? == Wait::Stopped {
                break;
            }
            self.drain(&sink)?;
            self.adapt_out();
        }
        let matched = self.rules.take().map(Rules::remove);
        let drained = self.drain_last(&sink);
        for g in [self.group, self.group.wrapping_add(1)] {
            self.unbind(g);
        }
        // Rules left behind are the worse news: reported first.
        let hits = match matched {
            Some(Err(e)) => return Err(NflogError::RulesLeft(e)),
            Some(Ok(hits)) => Some(hits),
            None => None,
        };
        drained?;
        if let Some(hits) = hits {
            let c = &self.counters;
            let seen = c.packets.load(Relaxed) + c.sequence_lost.load(Relaxed);
            c.unaccounted.store(hits.saturating_sub(seen), Relaxed);
        }
        Ok(SourceEnd::Stopped)
    }

    /// Takes what the kernel still sends once the rules are gone: the
    /// partial batches, which go when their timeout passes.
    fn drain_last(&mut self, sink: &PacketSink) -> Result<(), NflogError> {
        let quiet = self.timeout + Duration::from_millis(50);
        let deadline = Instant::now() + quiet.max(Duration::from_millis(100)) * 4;
        while Instant::now() < deadline && netlink::readable_within(self.nl.socket(), quiet)? {
            self.drain(sink)?;
        }
        self.drain(sink)?;
        Ok(())
    }
}

impl From<NflogError> for CaptureError {
    fn from(e: NflogError) -> Self {
        CaptureError::new(e)
    }
}

impl Source for NflogSource {
    fn notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.stale)
            .into_iter()
            .map(|what| {
                format!(
                    "removed stale {what}: no program has its log group bound (an icmpmon \
                     that died)"
                )
            })
            .collect()
    }
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
    fn run(self: Box<Self>, sink: PacketSink, stop: &Stop) -> Result<SourceEnd, CaptureError> {
        Ok(NflogSource::run(*self, sink, stop)?)
    }
}

impl Counters for NflogCounters {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn packet_msg(group: u16, hook: u8, seq: u32, ts: bool) -> Vec<u8> {
        let mut m = vec![2, 0];
        m.extend_from_slice(&group.to_be_bytes());
        m.extend(nla(NFULA_PACKET_HDR, &[0x08, 0x00, hook, 0]));
        m.extend(nla(NFULA_IFINDEX_INDEV, &3u32.to_be_bytes()));
        m.extend(nla(NFULA_IFINDEX_OUTDEV, &5u32.to_be_bytes()));
        m.extend(nla(NFULA_PAYLOAD, &[0x45, 0, 0x05, 0xdc, 0, 0]));
        m.extend(nla(NFULA_SEQ, &seq.to_be_bytes()));
        if ts {
            let mut t = 5u64.to_be_bytes().to_vec();
            t.extend_from_slice(&7u64.to_be_bytes());
            m.extend(nla(NFULA_TIMESTAMP, &t));
        }
        m
    }

    #[test]
    fn in_packets_carry_the_kernel_time_and_in_device() {
        let l = parse_packet(&packet_msg(40, NF_INET_PRE_ROUTING, 9, true), 99).unwrap();
        assert_eq!(l.group, 40);
        assert_eq!(l.seq, Some(9));
        assert_eq!(l.packet.direction, Direction::In);
        assert_eq!(l.packet.ifindex, 3);
        assert_eq!(l.packet.ts_ns, 5_000_007_000);
        // From the IP header's total length, not the copied bytes.
        assert_eq!(l.packet.orig_len, 1500);
    }

    #[test]
    fn out_packets_take_the_receive_time_and_out_device() {
        let l = parse_packet(&packet_msg(41, NF_INET_LOCAL_OUT, 0, false), 99).unwrap();
        assert_eq!(l.packet.direction, Direction::Out);
        assert_eq!(l.packet.ifindex, 5);
        assert_eq!(l.packet.ts_ns, 99);
    }

    #[test]
    fn sequence_gaps_per_group() {
        let mut next = [None; 2];
        let at = |group, seq| parse_packet(&packet_msg(group, 0, seq, true), 0).unwrap();
        assert_eq!(count_gap(&mut next, 40, &at(40, 0)), 0);
        assert_eq!(count_gap(&mut next, 40, &at(41, 0)), 0);
        assert_eq!(count_gap(&mut next, 40, &at(40, 1)), 0);
        assert_eq!(count_gap(&mut next, 40, &at(40, 5)), 3);
        assert_eq!(count_gap(&mut next, 40, &at(41, 2)), 1);
        // Another pair's group, and a number from the past.
        assert_eq!(count_gap(&mut next, 40, &at(50, 9)), 0);
        assert_eq!(count_gap(&mut next, 40, &at(40, 2)), 0);
    }

    #[test]
    fn out_batches_follow_the_rate() {
        assert_eq!(out_threshold(0.0, 64), 1);
        assert_eq!(out_threshold(7_000.0, 64), 1);
        assert_eq!(out_threshold(140_000.0, 64), 35);
        assert_eq!(out_threshold(5e6, 64), 64);
        assert_eq!(out_threshold(5e6, 0), 1);
    }

    #[test]
    fn ip_lengths() {
        assert_eq!(ip_length(&[0x45, 0, 0, 84]), Some(84));
        let mut v6 = vec![0x60, 0, 0, 0, 0, 64];
        assert_eq!(ip_length(&v6), Some(104));
        v6.truncate(5);
        assert_eq!(ip_length(&v6), None);
        assert_eq!(ip_length(&[]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn arbitrary_messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_packet(&bytes, 0);
        }

        #[test]
        fn mutated_messages_never_panic(pos in 0usize..100, val in any::<u8>(), cut in 0usize..100) {
            let mut m = packet_msg(1, 0, 0, true);
            let p = pos % m.len();
            m[p] = val;
            m.truncate(m.len() - cut.min(m.len()));
            let _ = parse_packet(&m, 0);
        }
    }
}

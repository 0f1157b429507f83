//! The NFLOG source: binds its pair of log groups, installs its rules,
//! reads the groups' messages and ends cleanly (see the module's docs).

use crate::source::{CaptureError, Counters, Source, SourceEnd};
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkBuffer, NLM_F_REQUEST};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigFlags, ConfigMode, ConfigNla, Timeout,
};
use netlink_packet_netfilter::NetfilterProtoFamily;

use super::counters::NflogCounters;
use crate::netlink::{self, Acked, NetfilterSocket, Refusal, Wait};
use crate::pipeline::{Gathered, PacketSink, Stop};
use crate::privilege::Capability::CAP_NET_ADMIN;
use crate::rules::{self, Answer, Handoff, Ledger, Privileged, Request, Rules, Target};
use icmpmon_core::event::Direction;

use super::group::{
    batch_bytes, in_timer_hundredths, order_holds, out_batch_message, out_threshold,
};
use super::order::Order;
use super::packet::{count_gap, parse_packet, MSG_PACKET};
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the `out` rate is measured.
const OUT_RATE_WINDOW: Duration = Duration::from_millis(100);
/// Packets taken in one read of the socket, at most (and a message).
const READ_AT_MOST: usize = 4096;
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

/// The kernel's list of bound log groups (first column: the group).
const BOUND_GROUPS: &str = "/proc/net/netfilter/nfnetlink_log";

/// Bound groups with their rules installed.
#[derive(Debug)]
pub struct NflogSource {
    nl: NetfilterSocket,
    group: u16,
    /// Dropped (rules removed) before the last drain at stop.
    rules: Option<Rules>,
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
    /// Once the monitor holds no capability: what resizes the `out` batches.
    privileged: Option<Arc<dyn Privileged>>,
    /// Packets of several messages, handed on together.
    gathered: Gathered,
    /// Packets held until their place among the other group's is known.
    order: Order,
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
            counters: Arc::default(),
            next_seq: [None; 2],
            timeout,
            out_batch: 1,
            max_batch: opts.threshold,
            snaplen: opts.snaplen,
            out_seen: 0,
            window: Instant::now(),
            privileged: None,
            gathered: Gathered::default(),
            order: Order::new(order_holds(opts.timeout_ms)),
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
        let rules = Rules::install(
            target,
            &|g| netlink::bound_in_proc(BOUND_GROUPS, g, true),
            ledger,
        )?;
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
        let hundredths = in_timer_hundredths(opts.timeout_ms);
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
                // Per group (gaps: losses) and across them (the order).
                (ConfigFlags::SEQ | ConfigFlags::SEQ_GLOBAL).into(),
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
        let mut n = 0;
        let mut emptied = false;
        loop {
            let Some(datagram) = self.nl.try_recv(&self.counters.socket_overruns)? else {
                emptied = true;
                break;
            };
            let batch = self.gathered.batch(sink);
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
                // 0: the `in` group, 1: `out` (no other group's messages
                // come to this socket).
                let side = usize::from(logged.group != self.group);
                self.order
                    .push(side, logged.packet, logged.global_seq, batch);
                n += 1;
            }
            // Full, or much read (held back): the stop is checked between.
            if self.gathered.full() || n >= READ_AT_MOST {
                break;
            }
        }
        self.counters.packets.fetch_add(n as u64, Relaxed);
        // Packets whose hold is over go only once the socket has been read
        // empty (the other group's earlier packets may still be in it),
        // and at once: they have waited.
        if emptied && self.order.due() == Some(Duration::ZERO) {
            self.order.release_due(self.gathered.batch(sink));
            self.gathered.send(sink);
        } else {
            self.gathered.offer(sink);
        }
        Ok(n)
    }

    /// Hands on all it has: what is gathered and the packets held
    /// (counted as logged, they go on even when the capture failed).
    fn send_all(&mut self, sink: &PacketSink) {
        if self.order.due().is_some() {
            self.order.release_all(self.gathered.batch(sink));
        }
        self.gathered.send(sink);
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
            // The kernel checks CAP_NET_ADMIN: without it, the rules
            // helper sends it.
            let sent = match &self.privileged {
                None => rustix::net::send(
                    self.nl.socket(),
                    &out_batch_message(self.group.wrapping_add(1), want, self.snaplen),
                    rustix::net::SendFlags::empty(),
                )
                .map(drop)
                .map_err(io::Error::from),
                Some(p) => match p.call(Request::OutBatch { packets: want }) {
                    Ok(Answer::Sent) => Ok(()),
                    Ok(Answer::Refused(errno)) => Err(io::Error::from_raw_os_error(errno)),
                    Ok(other) => Err(io::Error::other(format!(
                        "the rules helper answered {other:?}"
                    ))),
                    Err(e) => Err(e),
                },
            };
            match sent {
                Ok(()) => {
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
        let captured = self.capture(&sink, stop);
        if captured.is_err() {
            self.send_all(&sink);
        }
        captured?;
        let matched = self.rules.take().map(Rules::remove);
        let drained = self.drain_last(&sink);
        // Without CAP_NET_ADMIN the kernel refuses an unbind: the rules
        // helper lets its copy of the socket go, and closing this one (when
        // the source is dropped) unbinds the groups.
        match &self.privileged {
            Some(p) => {
                let _ = p.call(Request::Release);
            }
            None => {
                for g in [self.group, self.group.wrapping_add(1)] {
                    self.unbind(g);
                }
            }
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
        let mut drained = Ok(());
        while drained.is_ok() && Instant::now() < deadline {
            match netlink::readable_within(self.nl.socket(), quiet) {
                Ok(true) => drained = self.drain(sink).map(drop),
                Ok(false) => break,
                Err(e) => drained = Err(e.into()),
            }
        }
        if drained.is_ok() {
            drained = self.drain(sink).map(drop);
        }
        // Whatever was gathered goes, even after a failed read.
        self.send_all(sink);
        drained
    }

    /// Reads packets until the stop (or a failure).
    fn capture(&mut self, sink: &PacketSink, stop: &Stop) -> Result<(), NflogError> {
        loop {
            // Batched, the rate is checked again within a window (a burst
            // that ends must not leave the group batched); and not past the
            // gathered batch's time, nor a held packet's.
            let rate = (self.out_batch > 1).then_some(OUT_RATE_WINDOW);
            let wait = [rate, self.gathered.due(), self.order.due()]
                .into_iter()
                .flatten()
                .min();
            if netlink::wait_readable(self.nl.socket(), wait, Some(stop))? == Wait::Stopped {
                return Ok(());
            }
            self.drain(sink)?;
            self.adapt_out();
        }
    }
}

impl From<NflogError> for CaptureError {
    fn from(e: NflogError) -> Self {
        CaptureError::new(e)
    }
}

impl Source for NflogSource {
    fn notices(&mut self) -> Vec<String> {
        self.rules
            .as_mut()
            .map_or_else(Vec::new, Rules::take_notices)
    }
    fn name(&self) -> &'static str {
        "nflog"
    }
    fn caveat(&self) -> Option<&'static str> {
        Some(
            "nflog stamps no time at output: RTTs of pings sent from here read short \
             (0 µs on a fast link); --source packet gives exact ones",
        )
    }
    fn describe(&self) -> String {
        self.describe()
    }
    /// Removing the rules needs CAP_NET_ADMIN (the tools that do it get it
    /// through the ambient set, with CAP_NET_RAW for iptables).
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
        Ok(NflogSource::run(*self, sink, stop)?)
    }
}

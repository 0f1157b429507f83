//! The generic netlink client of the `icmpmon` family: resolving the
//! family (refusing a module that speaks another protocol version), STATS,
//! and the requests a subscription makes (`source` REGISTERs and runs it).

use std::io;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_generic::ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};

use super::abi::{self, attr, cmd, IcmpmonAttr, IcmpmonMsg};
use crate::netlink::{self, Refusal};

/// Larger than any batch the module sends (ICMPMON_BATCH_BYTES_MAX + headers).
const RECV_BUFFER: usize = 256 * 1024;
/// How long to wait for the kernel to answer a request.
pub(super) const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
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
        "{0} needs CAP_NET_ADMIN in the initial user namespace: run icmpmon with sudo (or \
         give it cap_net_admin); root of a container's user namespace only where the \
         administrator allows it (`echo 1 > /sys/module/icmpmon/parameters/userns_subscribe`)"
    )]
    NeedsCapNetAdmin(&'static str),
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

/// REGISTER settings (see the limits in `abi`).
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

/// What the module says of a subscription as it ends (CLOSE's reply, BYE):
/// losses after the last delivered batch reach us only this way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tail {
    /// SEQ the next batch would have had: batches sent in all.
    pub seq: u64,
    /// Records lost since the last delivered batch.
    pub lost: u64,
    /// Records made for this subscriber in all.
    pub seen: u64,
}

impl Tail {
    fn from_attrs(attrs: &[IcmpmonAttr]) -> Option<Self> {
        let (mut seq, mut lost, mut seen) = (None, None, None);
        for a in attrs {
            match *a {
                IcmpmonAttr::Seq(v) => seq = Some(v),
                IcmpmonAttr::Lost(v) => lost = Some(v),
                IcmpmonAttr::Seen(v) => seen = Some(v),
                _ => {}
            }
        }
        Some(Self {
            seq: seq?,
            lost: lost?,
            seen: seen?,
        })
    }
}

/// What one incoming message means to us.
pub(super) enum Incoming {
    Records {
        seq: u64,
        lost: u64,
        data: Vec<u8>,
    },
    /// The kernel ended the subscription (the reason), with its tail.
    Bye(u32, Option<Tail>),
    /// CLOSE's reply, before its ACK: the tail.
    Closed(Tail),
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
    pub(super) sock: Socket,
    pub(super) family_id: u16,
    pub(super) next_seq: u32,
    pub(super) buf: Vec<u8>,
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

    pub(super) fn request(
        &mut self,
        command: u8,
        attrs: Vec<IcmpmonAttr>,
    ) -> Result<u32, KmodError> {
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
    pub(super) fn receive(&mut self) -> io::Result<Vec<Incoming>> {
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
    pub(super) fn transact(
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
                        Some(libc::EPERM) => KmodError::NeedsCapNetAdmin(match command {
                            cmd::REGISTER => "registering with the icmpmon kernel module",
                            _ => "reading the icmpmon kernel module's counters",
                        }),
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
}

/// The family id from a lookup's answer, if the module speaks our protocol
/// version (version 1 modules are refused: see `abi`).
fn family_of_our_version(id: Option<u16>, version: Option<u32>) -> Result<u16, KmodError> {
    match (id, version) {
        (None, _) => Err(KmodError::NotLoaded),
        (Some(id), Some(v)) if v == u32::from(abi::GENL_VERSION) => Ok(id),
        (Some(_), v) => Err(KmodError::WrongVersion(v)),
    }
}

pub(super) fn classify(msg: IcmpmonMsg) -> Incoming {
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
            Tail::from_attrs(&msg.attrs),
        ),
        cmd::CLOSE => Tail::from_attrs(&msg.attrs).map_or(Incoming::Undecodable, Incoming::Closed),
        cmd::STATS => Incoming::Stats(KmodStats::from_attrs(&msg.attrs)),
        // Our family, a command this version does not know.
        _ => Incoming::Undecodable,
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

    /// CLOSE's reply and BYE carry the tail; a reply without it is damaged.
    #[test]
    fn the_tail_of_close_and_bye() {
        let tail = vec![
            IcmpmonAttr::Seq(7),
            IcmpmonAttr::Lost(3),
            IcmpmonAttr::Seen(40),
        ];
        let want = Tail {
            seq: 7,
            lost: 3,
            seen: 40,
        };
        let closed = classify(IcmpmonMsg::new(cmd::CLOSE, tail.clone()));
        assert!(matches!(closed, Incoming::Closed(t) if t == want));
        let mut bye = tail.clone();
        bye.push(IcmpmonAttr::ByeReason(abi::BYE_UNLOAD));
        let bye = classify(IcmpmonMsg::new(cmd::BYE, bye));
        assert!(matches!(bye, Incoming::Bye(abi::BYE_UNLOAD, Some(t)) if t == want));
        // An older module's BYE: the reason alone.
        let old = classify(IcmpmonMsg::new(
            cmd::BYE,
            vec![IcmpmonAttr::ByeReason(abi::BYE_UNLOAD)],
        ));
        assert!(matches!(old, Incoming::Bye(abi::BYE_UNLOAD, None)));
        let cut = classify(IcmpmonMsg::new(cmd::CLOSE, tail[..2].to_vec()));
        assert!(matches!(cut, Incoming::Undecodable));
    }
}

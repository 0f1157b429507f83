//! What the sources with firewall rules need CAP_NET_ADMIN for once the
//! monitor has dropped it (privilege separation): a process that kept it
//! (icmpmon's rules helper) holds the rules as installed (`Handoff`) and a
//! copy of the source's netlink socket, and does one narrow thing per
//! `Request`: a batch verdict for its own queue, the size of its own NFLOG
//! `out` group's batches, stopping or removing its own rules. A monitor
//! taken over can ask for nothing else: no message of its making goes out
//! with the helper's capability. Each side decodes what the other sends
//! as untrusted (fixed sizes, every field checked).
//!
//! `Privileged` is the monitor's side (the binary implements it over a
//! socketpair); `crate::privileged::Executor` is the helper's.

use std::io;

use super::target::{Backend, Target};

/// The monitor's way to its rules helper.
pub trait Privileged: Send + Sync + std::fmt::Debug {
    /// One request and its answer; an error: the helper is gone (or stuck).
    fn call(&self, request: Request) -> io::Result<Answer>;

    /// A request whose answer need not be waited for (a verdict, one per
    /// burst: the capture thread reads on while the helper sends it). An
    /// error: the helper is gone; `Ok(Err(answer))`: it did not send this
    /// or an earlier posted request, and answered that instead of `Sent`.
    fn post(&self, request: Request) -> io::Result<Result<(), Answer>> {
        Ok(match self.call(request)? {
            Answer::Sent => Ok(()),
            other => Err(other),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// NFQUEUE: accept the queue's packets up to `id` (a batch verdict).
    Verdict { id: u32 },
    /// NFLOG: the `out` group's batches, in packets (1: one per message).
    OutBatch { packets: u32 },
    /// `Rules::stop_sending`.
    StopSending,
    /// `Rules::remove`.
    Remove,
    /// The source is done: the helper closes its copy of the socket, so
    /// that closing the source's own unbinds the queue or groups.
    Release,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Sent (a verdict or a configuration: the kernel's refusal, if any,
    /// comes back on the source's socket as for a message of its own).
    Sent,
    /// Not sent: the errno of the send, or EINVAL for a request that does
    /// not fit the rules handed over.
    Refused(i32),
    /// `Rules::stop_sending`'s answer.
    Stopping(bool),
    /// Removed; the packets they had matched.
    Removed(u64),
    /// Not removed, and why (they may still be there).
    NotRemoved(String),
}

pub const REQUEST_LEN: usize = 8;
pub const ANSWER_LEN: usize = 512;
pub const HANDOFF_LEN: usize = 16;

impl Request {
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let (tag, value) = match *self {
            Request::Verdict { id } => (1, id),
            Request::OutBatch { packets } => (2, packets),
            Request::StopSending => (3, 0),
            Request::Remove => (4, 0),
            Request::Release => (5, 0),
        };
        let mut m = [0u8; REQUEST_LEN];
        m[0] = tag;
        m[4..].copy_from_slice(&value.to_le_bytes());
        m
    }

    pub fn decode(m: &[u8]) -> Option<Self> {
        let m: &[u8; REQUEST_LEN] = m.try_into().ok()?;
        let value = u32::from_le_bytes([m[4], m[5], m[6], m[7]]);
        if m[1..4] != [0, 0, 0] {
            return None;
        }
        match (m[0], value) {
            (1, id) => Some(Request::Verdict { id }),
            (2, packets) if (1..=MAX_OUT_BATCH).contains(&packets) => {
                Some(Request::OutBatch { packets })
            }
            (3, 0) => Some(Request::StopSending),
            (4, 0) => Some(Request::Remove),
            (5, 0) => Some(Request::Release),
            _ => None,
        }
    }
}

/// The longest prefix of `s` within `max` bytes, cut at a character (for
/// text in a fixed-size message).
pub fn cut_at_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The largest `out` batch the NFLOG source asks for (`group::out_threshold`
/// stays far below).
const MAX_OUT_BATCH: u32 = 1 << 16;

impl Answer {
    pub fn encode(&self) -> [u8; ANSWER_LEN] {
        let mut m = [0u8; ANSWER_LEN];
        match self {
            Answer::Sent => m[0] = 1,
            Answer::Refused(errno) => {
                m[0] = 2;
                m[8..12].copy_from_slice(&errno.to_le_bytes());
            }
            Answer::Stopping(b) => {
                m[0] = 3;
                m[1] = u8::from(*b);
            }
            Answer::Removed(n) => {
                m[0] = 4;
                m[8..16].copy_from_slice(&n.to_le_bytes());
            }
            Answer::NotRemoved(why) => {
                m[0] = 5;
                let why = cut_at_char(why, ANSWER_LEN - 16);
                m[2..4].copy_from_slice(&(why.len() as u16).to_le_bytes());
                m[16..16 + why.len()].copy_from_slice(why.as_bytes());
            }
        }
        m
    }

    pub fn decode(m: &[u8]) -> Option<Self> {
        let m: &[u8; ANSWER_LEN] = m.try_into().ok()?;
        let word = u64::from_le_bytes(m[8..16].try_into().ok()?);
        Some(match m[0] {
            1 => Answer::Sent,
            2 => Answer::Refused(i32::from_le_bytes(m[8..12].try_into().ok()?)),
            3 if m[1] <= 1 => Answer::Stopping(m[1] == 1),
            4 => Answer::Removed(word),
            5 => {
                let len = usize::from(u16::from_le_bytes([m[2], m[3]]));
                let text = m.get(16..16 + len)?;
                Answer::NotRemoved(std::str::from_utf8(text).ok()?.to_string())
            }
            _ => return None,
        })
    }
}

/// The rules as installed, for the helper to take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    pub(crate) backend: Backend,
    pub(crate) target: Target,
    pub(crate) tables_existed: [bool; 2],
}

impl Handoff {
    pub fn encode(&self) -> [u8; HANDOFF_LEN] {
        let mut m = [0u8; HANDOFF_LEN];
        m[0] = match self.backend {
            Backend::Nft => 1,
            Backend::Xtables => 2,
        };
        m[2] = u8::from(self.tables_existed[0]);
        m[3] = u8::from(self.tables_existed[1]);
        match self.target {
            Target::Queue(q) => {
                m[1] = 1;
                m[4..6].copy_from_slice(&q.to_le_bytes());
            }
            Target::Log {
                group,
                snaplen,
                threshold,
            } => {
                m[1] = 2;
                m[4..6].copy_from_slice(&group.to_le_bytes());
                m[8..12].copy_from_slice(&snaplen.to_le_bytes());
                m[12..16].copy_from_slice(&threshold.to_le_bytes());
            }
        }
        m
    }

    pub fn decode(m: &[u8]) -> Option<Self> {
        let m: &[u8; HANDOFF_LEN] = m.try_into().ok()?;
        let backend = match m[0] {
            1 => Backend::Nft,
            2 => Backend::Xtables,
            _ => return None,
        };
        if m[2] > 1 || m[3] > 1 || m[6..8] != [0, 0] {
            return None;
        }
        let number = u16::from_le_bytes([m[4], m[5]]);
        let word = |i: usize| u32::from_le_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
        let target = match m[1] {
            1 if m[8..] == [0; 8] => Target::Queue(number),
            2 => Target::Log {
                group: number,
                snaplen: word(8),
                threshold: word(12),
            },
            _ => return None,
        };
        Some(Self {
            backend,
            target,
            tables_existed: [m[2] == 1, m[3] == 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            any::<u32>().prop_map(|id| Request::Verdict { id }),
            (1..=MAX_OUT_BATCH).prop_map(|packets| Request::OutBatch { packets }),
            Just(Request::StopSending),
            Just(Request::Remove),
            Just(Request::Release),
        ]
    }

    fn answer() -> impl Strategy<Value = Answer> {
        prop_oneof![
            Just(Answer::Sent),
            any::<i32>().prop_map(Answer::Refused),
            any::<bool>().prop_map(Answer::Stopping),
            any::<u64>().prop_map(Answer::Removed),
            ".{0,100}".prop_map(Answer::NotRemoved),
        ]
    }

    fn handoff() -> impl Strategy<Value = Handoff> {
        let target = prop_oneof![
            any::<u16>().prop_map(Target::Queue),
            (any::<u16>(), any::<u32>(), any::<u32>()).prop_map(|(group, snaplen, threshold)| {
                Target::Log {
                    group,
                    snaplen,
                    threshold,
                }
            }),
        ];
        (any::<bool>(), target, any::<[bool; 2]>()).prop_map(|(nft, target, tables_existed)| {
            Handoff {
                backend: if nft { Backend::Nft } else { Backend::Xtables },
                target,
                tables_existed,
            }
        })
    }

    proptest! {
        #[test]
        fn messages_survive_the_trip(r in request(), a in answer(), h in handoff()) {
            prop_assert_eq!(Request::decode(&r.encode()), Some(r));
            prop_assert_eq!(Answer::decode(&a.encode()), Some(a));
            prop_assert_eq!(Handoff::decode(&h.encode()), Some(h));
        }

        /// Whatever the other side sends: decoded within bounds, or
        /// refused; never a panic.
        #[test]
        fn arbitrary_bytes_are_decoded_or_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..600)
        ) {
            if let Some(r) = Request::decode(&bytes) {
                prop_assert_eq!(Request::decode(&r.encode()), Some(r));
            }
            if let Some(Answer::NotRemoved(why)) = Answer::decode(&bytes) {
                prop_assert!(why.len() <= ANSWER_LEN - 16);
            }
            if let Some(h) = Handoff::decode(&bytes) {
                prop_assert_eq!(Handoff::decode(&h.encode()), Some(h));
            }
        }
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character() {
        let why = "ü".repeat(400);
        let Some(Answer::NotRemoved(back)) = Answer::decode(&Answer::NotRemoved(why).encode())
        else {
            panic!("not decoded")
        };
        assert!(back.len() <= ANSWER_LEN - 16 && back.chars().all(|c| c == 'ü'));
    }
}

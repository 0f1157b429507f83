//! What the aggregator thread asks the attribution thread: a socket to
//! find, by the flow or echo id a message names.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use icmpmon_core::event::{Direction, Family, IcmpEvent};

/// What identifies a local socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LookupKey {
    /// A TCP or UDP flow this host sent (quoted by an error it received).
    Inet {
        proto: u8,
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// An echo request sent from here: a ping socket's id, or a raw socket.
    Echo { v6: bool, local: IpAddr, id: u16 },
}

impl LookupKey {
    /// What to look up for `ev`, if anything: an error that arrived quoting
    /// a TCP or UDP packet or an echo request (sent from here, if anything
    /// local owns it), or an echo request leaving.
    pub fn of(ev: &IcmpEvent) -> Option<Self> {
        let v6 = ev.family == Family::V6;
        if icmpmon_core::aggregate::is_error(ev.family, ev.icmp_type) {
            let q = ev.quoted.as_ref()?;
            if ev.direction == Direction::Out {
                return None;
            }
            return match (q.proto, q.echo_id) {
                (6 | 17, _) => Some(LookupKey::Inet {
                    proto: q.proto,
                    local: SocketAddr::new(q.src, q.sport?),
                    remote: SocketAddr::new(q.dst, q.dport?),
                }),
                (1 | 58, Some(id)) => Some(LookupKey::Echo {
                    v6: q.proto == 58,
                    local: q.src,
                    id,
                }),
                _ => None,
            };
        }
        let request = if v6 { 128 } else { 8 };
        match (ev.icmp_type, ev.echo, ev.direction) {
            (t, Some(e), Direction::Out) if t == request => Some(LookupKey::Echo {
                v6,
                local: ev.src,
                id: e.id,
            }),
            _ => None,
        }
    }
}

/// A lookup asked for, and when: one whose row has already gone out
/// unattributed (older than `join::WAIT`) is not worth making.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask {
    pub key: LookupKey,
    pub at: Instant,
}

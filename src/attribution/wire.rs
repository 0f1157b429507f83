//! The attribution helper's protocol: one fixed-size request (a lookup
//! key), one fixed-size answer, over a SOCK_SEQPACKET socketpair. Each side
//! decodes what the other sends as untrusted: the helper holds capabilities
//! the monitor does not, and the monitor parses packets anyone can send.
//! A message of the wrong length or with a bad field is refused whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use icmpmon_capture::rules::cut_at_char;
use icmpmon_core::aggregate::{Attribution, Owner};

use super::ask::LookupKey;

/// kind, proto (or v6), the two addresses' families, two ports (or the
/// echo id), two addresses of 16 bytes.
pub(crate) const REQUEST: usize = 40;
/// outcome, comm's length, cgroup's length, pid, uid, /proc scans so far,
/// comm, cgroup.
pub(crate) const ANSWER: usize = 1024;
const COMM: usize = 64;
const HEAD: usize = 20;
/// The longest cgroup path an answer carries; a longer one is cut (at a
/// character boundary). Real ones (Kubernetes pods) run to about 200.
pub(crate) const CGROUP: usize = ANSWER - HEAD - COMM;

const INET: u8 = 1;
const ECHO: u8 = 2;

fn put_addr(out: &mut [u8], fam: &mut u8, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            *fam = 4;
            out[..4].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            *fam = 6;
            out.copy_from_slice(&v6.octets());
        }
    }
}

fn get_addr(fam: u8, b: &[u8]) -> Option<IpAddr> {
    let b: [u8; 16] = b.try_into().ok()?;
    match fam {
        4 if b[4..].iter().all(|&x| x == 0) => Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()),
        6 => Some(Ipv6Addr::from(b).into()),
        _ => None,
    }
}

pub(crate) fn encode_request(key: &LookupKey) -> [u8; REQUEST] {
    let mut m = [0u8; REQUEST];
    let (mut fl, mut fr) = (0, 0);
    match *key {
        LookupKey::Inet {
            proto,
            local,
            remote,
        } => {
            m[0] = INET;
            m[1] = proto;
            m[4..6].copy_from_slice(&local.port().to_be_bytes());
            m[6..8].copy_from_slice(&remote.port().to_be_bytes());
            put_addr(&mut m[8..24], &mut fl, local.ip());
            put_addr(&mut m[24..40], &mut fr, remote.ip());
        }
        LookupKey::Echo { v6, local, id } => {
            m[0] = ECHO;
            m[1] = u8::from(v6);
            m[4..6].copy_from_slice(&id.to_be_bytes());
            put_addr(&mut m[8..24], &mut fl, local);
        }
    }
    m[2] = fl;
    m[3] = fr;
    m
}

pub(crate) fn decode_request(m: &[u8]) -> Option<LookupKey> {
    let m: &[u8; REQUEST] = m.try_into().ok()?;
    let p1 = u16::from_be_bytes([m[4], m[5]]);
    let p2 = u16::from_be_bytes([m[6], m[7]]);
    let local = get_addr(m[2], &m[8..24])?;
    match m[0] {
        INET if matches!(m[1], 6 | 17) => Some(LookupKey::Inet {
            proto: m[1],
            local: SocketAddr::new(local, p1),
            remote: SocketAddr::new(get_addr(m[3], &m[24..40])?, p2),
        }),
        ECHO if m[1] <= 1 && m[3] == 0 && p2 == 0 && m[24..].iter().all(|&b| b == 0) => {
            Some(LookupKey::Echo {
                v6: m[1] == 1,
                local,
                id: p1,
            })
        }
        _ => None,
    }
}

pub(crate) fn encode_answer(a: &Attribution, scans: u64) -> [u8; ANSWER] {
    let mut m = [0u8; ANSWER];
    m[12..20].copy_from_slice(&scans.to_le_bytes());
    m[0] = match a {
        Attribution::Owner(o) => {
            let comm = cut_at_char(&o.comm, COMM).as_bytes();
            let cgroup = cut_at_char(&o.cgroup, CGROUP).as_bytes();
            m[1] = comm.len() as u8;
            m[2..4].copy_from_slice(&(cgroup.len() as u16).to_le_bytes());
            m[4..8].copy_from_slice(&o.pid.to_le_bytes());
            m[8..12].copy_from_slice(&o.uid.to_le_bytes());
            m[HEAD..HEAD + comm.len()].copy_from_slice(comm);
            m[HEAD + COMM..HEAD + COMM + cgroup.len()].copy_from_slice(cgroup);
            0
        }
        Attribution::Gone => 1,
        Attribution::Hidden => 2,
        Attribution::NoSocket => 3,
        Attribution::Skipped => 4,
    };
    m
}

/// The answer and the helper's count of /proc scans; `None` for anything
/// malformed (the caller counts the lookup as skipped).
pub(crate) fn decode_answer(m: &[u8]) -> Option<(Attribution, u64)> {
    let m: &[u8; ANSWER] = m.try_into().ok()?;
    let scans = u64::from_le_bytes(m[12..20].try_into().ok()?);
    let a = match m[0] {
        0 => {
            let comm_len = usize::from(m[1]);
            let cgroup_len = usize::from(u16::from_le_bytes([m[2], m[3]]));
            if comm_len > COMM || cgroup_len > CGROUP {
                return None;
            }
            let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
            Attribution::Owner(Arc::new(Owner {
                pid: u32::from_le_bytes(m[4..8].try_into().ok()?),
                uid: u32::from_le_bytes(m[8..12].try_into().ok()?),
                comm: text(&m[HEAD..HEAD + comm_len])?,
                cgroup: text(&m[HEAD + COMM..HEAD + COMM + cgroup_len])?,
            }))
        }
        1 => Attribution::Gone,
        2 => Attribution::Hidden,
        3 => Attribution::NoSocket,
        4 => Attribution::Skipped,
        _ => return None,
    };
    Some((a, scans))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ]
    }

    fn key() -> impl Strategy<Value = LookupKey> {
        prop_oneof![
            (
                prop_oneof![Just(6u8), Just(17u8)],
                addr(),
                any::<u16>(),
                any::<u16>()
            )
                .prop_flat_map(|(proto, l, lp, rp)| {
                    // A flow's two ends are of one family.
                    let remote = if l.is_ipv4() {
                        any::<[u8; 4]>().prop_map(IpAddr::from).boxed()
                    } else {
                        any::<[u8; 16]>().prop_map(IpAddr::from).boxed()
                    };
                    remote.prop_map(move |r| LookupKey::Inet {
                        proto,
                        local: SocketAddr::new(l, lp),
                        remote: SocketAddr::new(r, rp),
                    })
                }),
            (any::<bool>(), addr(), any::<u16>()).prop_map(|(v6, local, id)| LookupKey::Echo {
                v6,
                local,
                id
            }),
        ]
    }

    fn attribution() -> impl Strategy<Value = Attribution> {
        prop_oneof![
            (any::<u32>(), any::<u32>(), ".{0,20}", ".{0,300}").prop_map(
                |(pid, uid, comm, cgroup)| Attribution::Owner(Arc::new(Owner {
                    pid,
                    uid,
                    comm,
                    cgroup
                }))
            ),
            Just(Attribution::Gone),
            Just(Attribution::Hidden),
            Just(Attribution::NoSocket),
            Just(Attribution::Skipped),
        ]
    }

    fn same(a: &Attribution, b: &Attribution) -> bool {
        match (a, b) {
            (Attribution::Owner(x), Attribution::Owner(y)) => x == y,
            _ => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }

    proptest! {
        #[test]
        fn requests_and_answers_survive_the_trip(k in key(), a in attribution(), scans: u64) {
            prop_assert_eq!(decode_request(&encode_request(&k)), Some(k));
            let (back, n) = decode_answer(&encode_answer(&a, scans)).expect("decodes");
            prop_assert!(same(&a, &back));
            prop_assert_eq!(n, scans);
        }

        /// Whatever either side sends, the other neither panics nor reads
        /// past the message: a wrong length or field is refused.
        #[test]
        fn arbitrary_messages_are_decoded_or_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..1100)
        ) {
            if let Some(k) = decode_request(&bytes) {
                prop_assert_eq!(bytes.len(), REQUEST);
                prop_assert_eq!(decode_request(&encode_request(&k)), Some(k));
            }
            if let Some((Attribution::Owner(o), _)) = decode_answer(&bytes) {
                prop_assert!(o.comm.len() <= COMM && o.cgroup.len() <= CGROUP);
            }
        }

        /// A real answer with one byte changed: decoded within bounds, or
        /// refused.
        #[test]
        fn damaged_answers_stay_in_bounds(a in attribution(), at in 0..ANSWER, x: u8) {
            let mut m = encode_answer(&a, 7);
            m[at] = x;
            if let Some((Attribution::Owner(o), _)) = decode_answer(&m) {
                prop_assert!(o.comm.len() <= COMM && o.cgroup.len() <= CGROUP);
            }
        }
    }

    #[test]
    fn a_long_cgroup_is_cut_at_a_character() {
        let o = Owner {
            pid: 1,
            uid: 0,
            comm: "é".repeat(40),
            cgroup: "/ü".repeat(400),
        };
        let (back, _) =
            decode_answer(&encode_answer(&Attribution::Owner(Arc::new(o)), 0)).expect("decodes");
        let Attribution::Owner(back) = back else {
            panic!("not an owner")
        };
        assert_eq!(back.comm, "é".repeat(32));
        assert!(back.cgroup.len() <= CGROUP && back.cgroup.starts_with("/ü/ü"));
    }
}

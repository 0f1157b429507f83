//! Flows and kinds of ICMP errors: what an error quotes, how errors are
//! classed and counted. Shared by the error tables, attribution ("who got
//! hurt") and the metrics, so none of them imports another.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Serialize;
use smallvec::SmallVec;

use crate::event::{kind_name, Family, Quoted};

/// The packet an error quotes, as a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FlowKey {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

impl From<&Quoted> for FlowKey {
    fn from(q: &Quoted) -> Self {
        Self {
            proto: q.proto,
            src: q.src,
            dst: q.dst,
            sport: q.sport,
            dport: q.dport,
        }
    }
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = proto_name(self.proto);
        match (self.sport, self.dport) {
            (Some(s), Some(d)) => {
                let (src, dst) = (self.src, self.dst);
                match (src, dst) {
                    (IpAddr::V6(_), _) => write!(f, "{proto} [{src}]:{s} → [{dst}]:{d}"),
                    _ => write!(f, "{proto} {src}:{s} → {dst}:{d}"),
                }
            }
            _ => write!(f, "{proto} {} → {}", self.src, self.dst),
        }
    }
}

pub fn proto_name(p: u8) -> Cow<'static, str> {
    Cow::Borrowed(match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        132 => "sctp",
        33 => "dccp",
        136 => "udplite",
        47 => "gre",
        50 => "esp",
        _ => return Cow::Owned(format!("proto-{p}")),
    })
}

/// Named counts as text: `frag-needed 3, port-unreachable 1`.
pub fn kinds_text(kinds: &[(Cow<'static, str>, u64)]) -> String {
    kinds
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether this type is an ICMP error (it quotes the offending packet).
pub fn is_error(family: Family, icmp_type: u8) -> bool {
    match family {
        Family::V4 => matches!(icmp_type, 3 | 4 | 5 | 11 | 12),
        Family::V6 => matches!(icmp_type, 1..=4 | 137),
    }
}

/// Error counts by kind, a handful of kinds at most per row.
/// Held inline: a new flow or reporter (a flood of errors from many
/// sources) allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct KindCounts(SmallVec<[(Kind, u64); KINDS_PER_ROW]>);

/// An error's family, type and code.
type Kind = (Family, u8, u8);

const KINDS_PER_ROW: usize = 6;

impl KindCounts {
    pub(crate) fn add(&mut self, k: Kind) {
        if let Some(e) = self.0.iter_mut().find(|(x, _)| *x == k) {
            e.1 += 1;
        } else if self.0.len() < KINDS_PER_ROW {
            self.0.push((k, 1));
        }
    }

    /// The kinds by name; a name both families have (port-unreachable)
    /// says which it is.
    pub fn named(&self) -> Vec<(Cow<'static, str>, u64)> {
        let name = |&(f, t, c): &Kind| kind_name(f, t, c);
        let mut v: Vec<_> = self
            .0
            .iter()
            .map(|(k, n)| {
                let both = self.0.iter().any(|(o, _)| o.0 != k.0 && name(o) == name(k));
                match (both, k.0) {
                    (false, _) => (name(k), *n),
                    (true, Family::V4) => (Cow::Owned(format!("{} (IPv4)", name(k))), *n),
                    (true, Family::V6) => (Cow::Owned(format!("{} (IPv6)", name(k))), *n),
                }
            })
            .collect();
        v.sort_by_key(|k| std::cmp::Reverse(k.1));
        v
    }
}

/// The class of an error for metrics labels (`icmpmon_errors_total{class}`):
/// a handful of values whatever the type, so labels stay bounded.
pub fn error_class(f: Family, icmp_type: u8, kind: &str) -> &'static str {
    match (f, icmp_type) {
        (Family::V4, 3) if kind == "frag-needed" => "too-big",
        (Family::V4, 3) | (Family::V6, 1) => "unreachable",
        (Family::V6, 2) => "too-big",
        (Family::V4, 11) | (Family::V6, 3) => "time-exceeded",
        (Family::V4, 12) | (Family::V6, 4) => "parameter-problem",
        (Family::V4, 5) | (Family::V6, 137) => "redirect",
        (Family::V4, 4) => "source-quench",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_both_families_have_says_which() {
        let mut k = KindCounts::default();
        for _ in 0..7 {
            k.add((Family::V4, 3, 3));
        }
        for _ in 0..5 {
            k.add((Family::V6, 1, 4));
        }
        k.add((Family::V4, 3, 4));
        assert_eq!(
            kinds_text(&k.named()),
            "port-unreachable (IPv4) 7, port-unreachable (IPv6) 5, frag-needed 1"
        );
    }
}

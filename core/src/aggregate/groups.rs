//! Peer groups by address prefix (`--config`'s `[peer-groups]`): each peer
//! pair remembers the groups of its two addresses, found once when the pair
//! enters the table, so totals per group pair cost nothing per packet.

use std::net::IpAddr;

use ipnet::IpNet;

/// A group's number in `Groups`.
pub type GroupId = u16;

/// The groups of a requester and a responder.
pub type GroupPair = [Option<GroupId>; 2];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    /// Longest prefix first: the first match is the most specific.
    prefixes: Vec<(IpNet, GroupId)>,
    names: Vec<String>,
}

impl Groups {
    /// Prefixes and their group names, in any order (at most 65 536 names).
    pub fn new(v: Vec<(IpNet, String)>) -> Self {
        let mut g = Groups::default();
        for (net, name) in v {
            let id = match g.names.iter().position(|n| *n == name) {
                Some(i) => i,
                None => {
                    g.names.push(name);
                    g.names.len() - 1
                }
            };
            g.prefixes
                .push((net.trunc(), GroupId::try_from(id).unwrap_or(GroupId::MAX)));
        }
        g.prefixes
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        g
    }

    /// The group of an address (a v4-mapped IPv6 address as its IPv4).
    pub fn id(&self, addr: IpAddr) -> Option<GroupId> {
        let addr = addr.to_canonical();
        self.prefixes
            .iter()
            .find(|(net, _)| net.contains(&addr))
            .map(|(_, g)| *g)
    }

    pub fn name(&self, id: GroupId) -> Option<&str> {
        self.names.get(usize::from(id)).map(String::as_str)
    }

    pub fn of(&self, addr: IpAddr) -> Option<&str> {
        self.id(addr).and_then(|g| self.name(g))
    }

    pub fn pair(&self, requester: IpAddr, responder: IpAddr) -> GroupPair {
        [self.id(requester), self.id(responder)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins_and_names_share_an_id() {
        let g = Groups::new(vec![
            ("10.0.0.0/8".parse().unwrap(), "dc1".into()),
            ("10.1.0.0/16".parse().unwrap(), "edge".into()),
            ("192.0.2.7/32".parse().unwrap(), "dc1".into()),
            ("2001:db8::/32".parse().unwrap(), "v6".into()),
        ]);
        let of = |a: &str| g.of(a.parse().unwrap());
        assert_eq!(of("10.2.3.4"), Some("dc1"));
        assert_eq!(of("10.1.3.4"), Some("edge"));
        assert_eq!(of("::ffff:10.1.3.4"), Some("edge"));
        assert_eq!(of("2001:db8::1"), Some("v6"));
        assert_eq!(of("192.0.2.8"), None);
        assert_eq!(
            g.id("192.0.2.7".parse().unwrap()),
            g.id("10.9.9.9".parse().unwrap())
        );
    }
}

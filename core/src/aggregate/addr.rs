//! Small keys and units shared by the tables.

use std::net::IpAddr;

/// An address as a hash-table key: hashed as one 128-bit word, which is
/// several times cheaper than `IpAddr`'s field-by-field hash (the top-talkers
/// sketch hashes one per event). A v4 address and its v4-mapped v6 twin
/// hash alike; equality still tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Addr(pub IpAddr);

impl Addr {
    pub fn bits(self) -> u128 {
        match self.0 {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        }
    }
}

impl std::hash::Hash for Addr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.bits());
    }
}

/// Rounds nanoseconds to the nearest microsecond.
pub fn ns_to_us(ns: u64) -> u64 {
    ns.saturating_add(500) / 1000
}

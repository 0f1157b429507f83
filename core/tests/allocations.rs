//! The aggregator allocates nothing per event once its bounded tables are
//! full: a flood of echo exchanges, each from a new source (spoofed, or a
//! scan's answers), pushes a pair out of the peer table per request.
//! Counted by a global allocator of this test binary (one test: nothing
//! else runs beside it).

use std::alloc::System;
use std::net::IpAddr;

use icmpmon_core::aggregate::{Aggregator, Config};
use icmpmon_core::event::{Direction, Echo, Family, IcmpEvent};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Message `i`: an echo request from source `i / 2` to this host, or its
/// reply 100 µs later; 10 µs apart.
fn exchange(i: u32) -> IcmpEvent {
    let me = IpAddr::from([10, 0, 0, 1]);
    let n = i / 2;
    let other = IpAddr::from(
        0x2000_0000u32
            .wrapping_add(n.wrapping_mul(2_654_435_761))
            .to_be_bytes(),
    );
    let request = i % 2 == 0;
    let (src, dst) = if request { (other, me) } else { (me, other) };
    IcmpEvent {
        drop: None,
        mono_ns: None,
        ts_ns: 1_000_000_000_000 + u64::from(i) * 10_000 + if request { 0 } else { 100_000 },
        direction: if request {
            Direction::In
        } else {
            Direction::Out
        },
        ifindex: 2,
        family: Family::V4,
        src,
        dst,
        ttl: 64,
        length: 84,
        icmp_type: if request { 8 } else { 0 },
        icmp_code: 0,
        echo: Some(Echo {
            id: 7,
            seq: n as u16,
            payload_len: 56,
            payload_digest: 0x1234,
        }),
        quoted: None,
        info: None,
    }
}

#[test]
fn a_churn_of_peers_allocates_nothing_per_event() {
    let cfg = Config {
        max_peers: 1024,
        max_pending: 1024,
        recent_events: 0,
        ..Config::default()
    };
    let mut agg = Aggregator::new(cfg);
    // Every bounded table full, and the RTT histories of the pairs in the
    // peer table allocated.
    let warm = 40_000;
    for i in 0..warm {
        assert!(agg.ingest(&exchange(i)).rtt_us.is_some() || i % 2 == 0);
    }
    let region = Region::new(GLOBAL);
    let events = 40_000;
    for i in warm..warm + events {
        agg.ingest(&exchange(i));
    }
    let change = region.change();
    let allocated = change.allocations + change.reallocations;
    assert_eq!(
        allocated,
        0,
        "{allocated} allocations in {events} events of {} new pairs",
        events / 2
    );
}

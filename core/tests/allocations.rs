//! The aggregator allocates nothing per event once its bounded tables are
//! full: a flood of echo exchanges and of port unreachables, each from a
//! new source (spoofed, or a scan's answers), pushes a pair out of the
//! peer table per request and a reporter and a flow out of the error
//! tables per error; oversized echo requests from one source (`ping -s
//! 1500 -f`) keep its flag raised. Counted by a global allocator of this
//! test binary (one test: nothing else runs beside it).

use std::alloc::System;
use std::net::IpAddr;

use icmpmon_core::aggregate::{Aggregator, Config, FlagKind};
use icmpmon_core::event::{Direction, Echo, Family, IcmpEvent, Quoted};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Message `i`, 5 µs apart (all within one second: a per-second flag is
/// raised once, in the warm-up): an echo request from a new source to this
/// host, its reply 100 µs later, a port unreachable about this host's UDP
/// probe from another new source, or an oversized echo request from one
/// source.
fn message(i: u32) -> IcmpEvent {
    let me = IpAddr::from([10, 0, 0, 1]);
    let big = IpAddr::from([10, 9, 9, 9]);
    let n = i / 4;
    let new = |base: u32| {
        IpAddr::from(
            base.wrapping_add(n.wrapping_mul(2_654_435_761))
                .to_be_bytes(),
        )
    };
    let ts_ns = 1_000_000_000_000 + u64::from(i) * 5_000;
    let (peer, reporter) = (new(0x2000_0000), new(0x6000_0000));
    let (direction, src, dst, icmp_type, icmp_code, ts_ns) = match i % 4 {
        0 => (Direction::In, peer, me, 8, 0, ts_ns),
        1 => (Direction::Out, me, peer, 0, 0, ts_ns + 100_000),
        2 => (Direction::In, reporter, me, 3, 3, ts_ns),
        _ => (Direction::In, big, me, 8, 0, ts_ns),
    };
    IcmpEvent {
        drop: None,
        mono_ns: None,
        ts_ns,
        direction,
        ifindex: 2,
        family: Family::V4,
        src,
        dst,
        ttl: 64,
        length: 84,
        icmp_type,
        icmp_code,
        echo: (icmp_type != 3).then_some(Echo {
            id: 7,
            seq: n as u16,
            payload_len: if src == big { 1500 } else { 56 },
            payload_digest: 0x1234,
        }),
        quoted: (icmp_type == 3).then_some(Quoted {
            proto: 17,
            src: me,
            dst: reporter,
            sport: Some(40000),
            dport: Some(33434),
            echo_id: None,
        }),
        info: None,
    }
}

fn errors(agg: &Aggregator) -> u64 {
    agg.error_kinds().map(|(_, n)| n).sum()
}

#[test]
fn a_churn_of_sources_allocates_nothing_per_event() {
    let cfg = Config {
        max_peers: 1024,
        max_pending: 1024,
        max_flows: 1024,
        max_reporters: 1024,
        recent_events: 0,
        ..Config::default()
    };
    let mut agg = Aggregator::new(cfg);
    // Every bounded table full, and the RTT histories of the pairs in the
    // peer table allocated.
    let warm = 60_000;
    for i in 0..warm {
        let rtt = agg.ingest(&message(i)).rtt_us;
        assert_eq!(rtt.is_some(), i % 4 == 1, "message {i}");
    }
    let (echo, errs) = (agg.echo_totals(), errors(&agg));
    let region = Region::new(GLOBAL);
    let events = 60_000;
    for i in warm..warm + events {
        agg.ingest(&message(i));
    }
    let change = region.change();
    let allocated = change.allocations + change.reallocations;
    // The churn took place: a pair pushed out per request, every request
    // answered, every error counted.
    let after = agg.echo_totals();
    let n = u64::from(events / 4);
    assert_eq!(after.peers_evicted - echo.peers_evicted, n);
    assert_eq!(after.answered - echo.answered, n);
    assert_eq!(errors(&agg) - errs, n);
    let oversized = agg
        .active_flags()
        .into_iter()
        .find(|(kind, _)| *kind == FlagKind::OversizedEcho);
    assert_eq!(oversized, Some((FlagKind::OversizedEcho, 1)));
    assert_eq!(allocated, 0, "{allocated} allocations in {events} events");
}

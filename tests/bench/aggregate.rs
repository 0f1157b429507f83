//! Criterion benchmarks of the aggregator's ingest (a report, not a test):
//! `cargo bench --bench aggregate` (CI runs it with `-- --quick`).
//! The goal is ≥ 8 M events/s on one core.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use icmpmon_core::aggregate::{Aggregator, Config};
use icmpmon_core::event::{Direction, Echo, Family, IcmpEvent, Quoted};

const EVENTS: usize = 200_000;

fn event(ts_ns: u64, src: IpAddr, dst: IpAddr, t: u8, n: u32) -> IcmpEvent {
    IcmpEvent {
        drop: None,
        mono_ns: None,
        ts_ns,
        direction: Direction::In,
        ifindex: 2,
        family: Family::V4,
        src,
        dst,
        ttl: 64,
        length: 84,
        icmp_type: t,
        icmp_code: if t == 3 { 3 } else { 0 },
        echo: matches!(t, 0 | 8).then_some(Echo {
            id: (n >> 16) as u16,
            seq: n as u16,
            payload_len: 56,
            payload_digest: 0x1234,
        }),
        quoted: (t == 3).then_some(Quoted {
            proto: 17,
            src: dst,
            dst: src,
            sport: Some(40000),
            dport: Some(33434 + (n % 30) as u16),
            echo_id: None,
        }),
        info: None,
    }
}

/// Event `i` of ping traffic between 1000 peer pairs: request, reply
/// 200 µs later, and a port unreachable every 16th message, `gap_ns`
/// apart. The gap sets how many requests wait inside the 2 s timeout.
fn pings(i: u32, gap_ns: u64) -> IcmpEvent {
    let me = IpAddr::from([10, 0, 0, 1]);
    let peer = IpAddr::from([10, 1, ((i / 2) % 1000 / 256) as u8, ((i / 2) % 1000) as u8]);
    let ts = 1_000_000_000_000 + u64::from(i) * gap_ns;
    match i % 16 {
        15 => event(ts, peer, me, 3, i),
        n if n % 2 == 0 => event(ts, me, peer, 8, i / 2),
        _ => event(ts + 200_000, peer, me, 0, i / 2),
    }
}

/// 100 k messages/s: ~94 k requests wait, the pending table is full (and
/// far bigger than the CPU caches).
fn busy(i: u32) -> IcmpEvent {
    pings(i, 10_000)
}

/// 1 k messages/s (each peer pings about once a second): ~1 k requests wait.
fn steady(i: u32) -> IcmpEvent {
    pings(i, 1_000_000)
}

/// Event `i` of a spoofed flood: every echo request from a new source.
fn spoofed(i: u32) -> IcmpEvent {
    let me = IpAddr::from([10, 0, 0, 1]);
    let src = IpAddr::from((0x2000_0000u32 + i.wrapping_mul(2_654_435_761)).to_be_bytes());
    event(1_000_000_000_000 + u64::from(i) * 1000, src, me, 8, i)
}

/// Builds event `i` of a workload.
type Make = fn(u32) -> IcmpEvent;

fn ingest(c: &mut Criterion) {
    let mut g = c.benchmark_group("aggregate_ingest");
    g.throughput(Throughput::Elements(EVENTS as u64));
    // Events are built as they are ingested, as the parser hands them on
    // (a prebuilt array of 200 k events would measure memory bandwidth).
    let cases: [(&str, Make); 3] = [
        ("steady_1000_peers", steady),
        ("busy_1000_peers", busy),
        ("spoofed_sources", spoofed),
    ];
    // The recent-events list is the dashboard's: without it (CSV, JSON
    // lines, metrics), icmpmon keeps none.
    let headless = Config {
        recent_events: 0,
        ..Config::default()
    };
    let runs = cases
        .iter()
        .map(|&(name, make)| (name.to_string(), make, Config::default()))
        .chain([(
            "steady_1000_peers_headless".to_string(),
            steady as Make,
            headless,
        )]);
    for (name, make, cfg) in runs {
        g.bench_function(name, |b| {
            b.iter_batched(
                || Aggregator::new(cfg.clone()),
                |mut agg| {
                    for i in 0..EVENTS as u32 {
                        black_box(agg.ingest(&make(i)));
                    }
                    agg
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut agg = Aggregator::new(Config::default());
    for i in 0..EVENTS as u32 {
        agg.ingest(&busy(i));
    }
    c.bench_function("aggregate_snapshot_1000_peers", |b| {
        b.iter(|| black_box(agg.snapshot()))
    });
}

criterion_group!(benches, ingest, snapshot);
criterion_main!(benches);

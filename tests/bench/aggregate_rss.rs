//! Memory under a spoofed flood (a report; exits 1 if a bound is broken):
//! `cargo run --release --example aggregate_rss [SOURCES]` ingests echo
//! requests from SOURCES (default 1 M) distinct addresses plus three heavy
//! hitters (1/11 of the traffic each), then prints the peak RSS and whether
//! the top-talkers sketch still ranks the heavy hitters first.

use std::net::IpAddr;

use icmpmon_core::aggregate::{Aggregator, Config};
use icmpmon_core::event::{Direction, Echo, Family, IcmpEvent};

const RSS_LIMIT_MIB: f64 = 64.0;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn main() {
    let sources: u32 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |s| s.parse().expect("a number of sources"));
    let heavy = [[192, 0, 2, 1], [192, 0, 2, 2], [192, 0, 2, 3]].map(IpAddr::from);
    let me = IpAddr::from([10, 0, 0, 1]);
    let mut agg = Aggregator::new(Config::default());
    let before = status_kib("VmRSS:");
    let mut events = 0u64;
    for i in 0..sources {
        // 3 of every 11 messages come from the heavy hitters.
        let src = if i % 11 < 3 {
            heavy[(i % 11) as usize]
        } else {
            IpAddr::from((0x2000_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761))).to_be_bytes())
        };
        let ev = IcmpEvent {
            drop: None,
            mono_ns: None,
            ts_ns: 1_000_000_000_000 + u64::from(i) * 1000,
            direction: Direction::In,
            ifindex: 2,
            family: Family::V4,
            src,
            dst: me,
            ttl: 64,
            length: 84,
            icmp_type: 8,
            icmp_code: 0,
            echo: Some(Echo {
                id: (i >> 16) as u16,
                seq: i as u16,
                payload_len: 56,
                payload_digest: 0,
            }),
            quoted: None,
            info: None,
        };
        agg.ingest(&ev);
        events += 1;
    }
    let snap = agg.snapshot();
    let peak = status_kib("VmHWM:") as f64 / 1024.0;
    let top: Vec<IpAddr> = snap.talkers.iter().take(3).map(|t| t.addr).collect();
    let found = heavy.iter().all(|h| top.contains(h));
    println!(
        "bench: aggregate, {events} echo requests from {sources} sources: peak RSS {peak:.1} MiB \
         (start {:.1} MiB, limit {RSS_LIMIT_MIB}); tables {:?}",
        before as f64 / 1024.0,
        snap.tables
    );
    for t in snap.talkers.iter().take(4) {
        println!(
            "bench:   talker {} count {} (error ≤ {})",
            t.addr, t.count, t.error
        );
    }
    println!(
        "bench:   heavy hitters ranked first: {}",
        if found { "yes" } else { "NO" }
    );
    if peak > RSS_LIMIT_MIB || !found {
        std::process::exit(1);
    }
}

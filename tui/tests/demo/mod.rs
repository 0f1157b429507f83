//! A deterministic view for snapshot tests and the render benchmark.

use icmpmon_tui::model::{
    AlertView, EchoTotals, EventView, HurtView, MtuView, PeerView, TypeCount, View,
};

/// A view with `peers` peer pairs and `events` recent events, every field
/// filled from the indices (no clock, no randomness).
pub fn sample(peers: usize, events: usize) -> View {
    let kinds = [
        "echo-request",
        "echo-reply",
        "port-unreachable",
        "ttl-exceeded",
        "frag-needed",
    ];
    View {
        source: "nfqueue (queue 7707, xtables NFQUEUE target)".into(),
        namespace: "mon".into(),
        caveat: None,
        uptime_s: 3725,
        total: 123_456,
        rate_per_s: 412.0,
        rate_history: (0..60).map(|i| 300 + (i * 37 % 200)).collect(),
        lost: vec![
            ("queue".into(), 0),
            ("socket".into(), 3),
            ("channel".into(), 0),
        ],
        filter: "not host 10.0.0.99".into(),
        echo: EchoTotals {
            requests: 60_000,
            answered: 59_880,
            lost: 100,
            pending: 20,
        },
        types: kinds
            .iter()
            .enumerate()
            .map(|(i, k)| TypeCount {
                name: (*k).into(),
                count: 60_000 / (i as u64 * 3 + 1),
            })
            .collect(),
        peers_total: peers,
        peers: (0..peers)
            .map(|i| {
                let n = i as u64;
                PeerView {
                    requester: std::net::IpAddr::from([
                        10,
                        (n / 65536 % 256) as u8,
                        (n / 256 % 256) as u8,
                        (n % 256) as u8,
                    ]),
                    responder: std::net::IpAddr::from([192, 0, 2, 1]),
                    requester_group: None,
                    // --config's [peer-groups]: every responder in one.
                    responder_group: Some("dc1".into()),
                    requests: 1000 - n % 1000,
                    replies: 1000 - n % 1000 - n % 7,
                    lost: n % 7,
                    pending: n % 3,
                    loss_pct: Some((n % 7) as f64 * 100.0 / (1000 - n % 1000) as f64),
                    rtt_min_us: Some(100 + n % 50),
                    rtt_avg_us: Some(250.0 + (n % 300) as f64),
                    rtt_p95_us: Some(900 + n % 400),
                    rtt_max_us: Some(5000 + n),
                    jitter_us: Some(12.5),
                    last_seen_s: (n % 30) as f64,
                    flags: if n % 11 == 3 {
                        vec!["echo-flood".into()]
                    } else {
                        vec![]
                    },
                    rtt_history: (0..128)
                        .map(|k| 200 + ((k * 53 + n as u32) % 400))
                        .collect(),
                }
            })
            .collect(),
        events: (0..events)
            .map(|i| {
                let error = i % 5 == 4;
                EventView {
                    time: format!("10:{:02}:{:02}.{:03}", i / 60 % 60, i % 60, i * 7 % 1000),
                    direction: if i % 2 == 0 { "out" } else { "in" }.into(),
                    kind: kinds[i % kinds.len()].into(),
                    src: format!("10.0.{}.{}", i / 256 % 256, i % 256),
                    dst: "192.0.2.1".into(),
                    detail: if error {
                        "udp 10.0.0.1:40000 → 192.0.2.1:33434".into()
                    } else {
                        format!("id 7 seq {} rtt 254µs", i % 65536)
                    },
                    error,
                    process: error.then(|| "nginx[812] nginx.service".into()),
                    process_detail: error.then(|| "nginx[812] nginx.service uid 33".into()),
                }
            })
            .collect(),
        alerts: vec![
            AlertView {
                time: "10:00:03.000".into(),
                flag: "echo-flood".into(),
                subject: "10.0.0.3".into(),
                detail: "more than 500 echo requests within one second".into(),
                count: 4,
            },
            AlertView {
                time: "10:00:09.500".into(),
                flag: "redirect".into(),
                subject: "10.0.0.254".into(),
                detail: "redirect to gateway 10.0.0.253".into(),
                count: 1,
            },
        ],
        ended: None,
        kernel: vec![
            ("OutRateLimitHost".into(), "+87/s".into()),
            ("icmp_echo_ignore_all".into(), "1".into()),
        ],
        hurt: vec![HurtView {
            who: "nginx.service".into(),
            process: "nginx[812]".into(),
            errors: 312,
            kinds: "frag-needed 312".into(),
            last: "tcp 10.0.0.1:443 → 198.51.100.7:51000 from 10.0.0.254".into(),
        }],
        mtus: vec![MtuView {
            destination: "198.51.100.7".into(),
            mtu: 1400,
            reporter: "10.0.0.254".into(),
            changed: "10:00:04.250".into(),
        }],
    }
}

//! Oracle test for echo pairing: on one capture, icmpmon's `rtt_us` per
//! reply must match tshark's `icmp.resptime` / `icmpv6.resptime` within
//! 1 µs, and the per-peer request / reply / loss counts must match
//! `tshark -z icmp,srt` / `icmpv6,srt` filtered on the peer.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{echo, ether, icmpmon, ipv4_icmp, ipv6_icmp, write_pcap_ns};
use pcap_file::DataLink;
use serde_json::Value;

const T0: u64 = 1_700_000_000_000_000_000;

/// Echo exchanges of three peer pairs (two IPv4, one IPv6) with RTTs of
/// odd nanosecond lengths and some requests never answered; then an
/// unrelated message 5 s later so every loss is past the 2 s timeout.
fn frames() -> Vec<(u64, Vec<u8>)> {
    let mut f: Vec<(u64, Vec<u8>)> = Vec::new();
    for seq in 1..=20u16 {
        let t = T0 + u64::from(seq) * 100_000_000;
        let s = u64::from(seq);
        // 10.0.0.1 → 10.0.0.2: every 5th request lost.
        f.push((t, ipv4_icmp([10, 0, 0, 1], [10, 0, 0, 2], &echo(8, 1, seq))));
        if seq % 5 != 0 {
            let rtt = 1_000_000 + s * 37_123 + 499;
            f.push((
                t + rtt,
                ipv4_icmp([10, 0, 0, 2], [10, 0, 0, 1], &echo(0, 1, seq)),
            ));
        }
        // 10.0.0.3 → 10.0.0.4: all answered, slow and jittery.
        let t3 = t + 10_000_000;
        f.push((
            t3,
            ipv4_icmp([10, 0, 0, 3], [10, 0, 0, 4], &echo(8, 2, seq)),
        ));
        let rtt = 20_000_000 + (s * 7_919_001) % 30_000_000;
        f.push((
            t3 + rtt,
            ipv4_icmp([10, 0, 0, 4], [10, 0, 0, 3], &echo(0, 2, seq)),
        ));
        // fd00::1 → fd00::2: requests 7 and 13 lost.
        if seq <= 15 {
            let t6 = t + 20_000_000;
            f.push((t6, ipv6_icmp(1, 2, &echo(128, 3, seq))));
            if seq != 7 && seq != 13 {
                let rtt = 300_001 + s * 1_501;
                f.push((t6 + rtt, ipv6_icmp(2, 1, &echo(129, 3, seq))));
            }
        }
    }
    f.sort_by_key(|(t, _)| *t);
    let last = f.last().unwrap().0;
    let unreach = [vec![3, 3, 0, 0, 0, 0, 0, 0], vec![0x45; 28]].concat();
    f.push((
        last + 5_000_000_000,
        ipv4_icmp([10, 0, 0, 9], [10, 0, 0, 1], &unreach),
    ));
    f.into_iter()
        .map(|(t, ip)| {
            let ethertype = if ip[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
            (t, ether(ethertype, &ip))
        })
        .collect()
}

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .expect("tshark is installed by tests/setup-debian.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Requests, replies and lost of `tshark -q -z PROTO,srt,FILTER`.
fn tshark_srt(file: &str, proto: &str, filter: &str) -> (u64, u64, u64) {
    let text = tshark(&["-r", file, "-q", "-z", &format!("{proto},srt,{filter}")]);
    let mut lines = text.lines().skip_while(|l| !l.starts_with("Requests"));
    lines.next().expect("a Requests header");
    let nums: Vec<u64> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .take(3)
        .map(|n| n.parse().unwrap())
        .collect();
    (nums[0], nums[1], nums[2])
}

#[test]
#[ignore = "needs tshark: tests/run-all.sh runs it"]
fn rtt_and_peer_counts_match_tshark() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("echo.pcap");
    let summary = dir.path().join("summary.json");
    write_pcap_ns(&pcap, DataLink::ETHERNET, &frames());
    let file = pcap.to_str().unwrap();

    let out = icmpmon(&[
        "--source",
        &format!("pcap:{file}"),
        "--csv",
        "-",
        "--summary-json",
        summary.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();

    // Frame N of tshark is CSV row N.
    let fields = tshark(&[
        "-r",
        file,
        "-T",
        "fields",
        "-e",
        "frame.number",
        "-e",
        "icmp.resptime",
        "-e",
        "icmpv6.resptime",
    ]);
    let mut compared = 0;
    for line in fields.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let n: usize = cols[0].parse().unwrap();
        let ours = rows[n - 1][14];
        let theirs = [cols[1], cols[2]].into_iter().find(|c| !c.is_empty());
        match theirs {
            Some(ms) => {
                let want_us: f64 = ms.parse::<f64>().unwrap() * 1000.0;
                let got_us: f64 = ours
                    .parse()
                    .unwrap_or_else(|_| panic!("frame {n}: no rtt_us, tshark {ms} ms"));
                assert!(
                    (got_us - want_us).abs() <= 1.0,
                    "frame {n}: rtt_us {got_us} vs tshark {want_us}"
                );
                compared += 1;
            }
            None => assert_eq!(ours, "", "frame {n}: rtt_us where tshark has none"),
        }
    }
    assert_eq!(compared, 16 + 20 + 13, "replies compared");

    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let peers: BTreeMap<String, &Value> = s["snapshot"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["requester"].as_str().unwrap().to_string(), p))
        .collect();
    for (requester, proto, filter) in [
        ("10.0.0.1", "icmp", "ip.addr==10.0.0.1"),
        ("10.0.0.3", "icmp", "ip.addr==10.0.0.3"),
        ("fd00::1", "icmpv6", "ipv6.addr==fd00::1"),
    ] {
        let (req, rep, lost) = tshark_srt(file, proto, filter);
        let p = peers[requester];
        let ours = (
            p["requests"].as_u64().unwrap(),
            p["replies"].as_u64().unwrap(),
            p["lost"].as_u64().unwrap(),
        );
        assert_eq!(
            ours,
            (req, rep, lost),
            "{requester}: icmpmon vs tshark -z {proto},srt"
        );
    }
    // Nothing left waiting: the last message came 5 s after the last request.
    assert_eq!(s["snapshot"]["echo"]["pending"], 0);
    assert_eq!(s["snapshot"]["echo"]["lost"], 4 + 2);
}

//! Issue 12: the metrics endpoint's series stay bounded whatever the
//! traffic. 100 000 echo requests from distinct spoofed sources, 20 000
//! frag-needed errors towards distinct destinations and every ICMP type and
//! code go through a pipe; /metrics is read while icmpmon still runs.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{echo, ipv4, ipv4_icmp, write_pcap};
use pcap_file::DataLink;

const RSS_BOUND_KIB: u64 = 64 * 1024;

/// The port icmpmon says it bound (`--metrics-listen 127.0.0.1:0`), read
/// from its stderr; the rest of stderr is drained on a thread.
fn bound_port(child: &mut Child) -> u16 {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(port) = line
                .strip_prefix("icmpmon: metrics at http://127.0.0.1:")
                .and_then(|r| r.strip_suffix("/metrics"))
            {
                let _ = tx.send(port.parse::<u16>().unwrap());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("icmpmon did not say where it serves metrics")
}

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The capture: every packet a distinct peer or destination.
fn frames() -> Vec<(u64, Vec<u8>)> {
    let mut v = Vec::new();
    let mut t = 1_000_000_000_000u64;
    for i in 0..100_000u32 {
        t += 10_000;
        let src = [11, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        v.push((t, ipv4_icmp(src, [10, 0, 0, 1], &echo(8, 1, i as u16))));
    }
    for i in 0..20_000u32 {
        t += 10_000;
        let dst = [12, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let quoted = ipv4(17, [10, 0, 0, 1], dst, &[0, 53, 0, 53, 0, 8, 0, 0]);
        let mtu = 1200 + (i % 200) as u16;
        let mut m = vec![3, 4, 0, 0, 0, 0];
        m.extend_from_slice(&mtu.to_be_bytes());
        m.extend_from_slice(&quoted);
        v.push((t, ipv4_icmp([10, 0, 0, 254], [10, 0, 0, 1], &m)));
    }
    // Every other type and code (echoes apart: they would add requests).
    for ty in (0..=255u8).filter(|t| ![0, 8].contains(t)) {
        for code in 0..4u8 {
            t += 10_000;
            let m = vec![ty, code, 0, 0, 0, 0, 0, 0];
            v.push((t, ipv4_icmp([10, 0, 0, 9], [10, 0, 0, 1], &m)));
        }
    }
    v
}

fn peak_rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn run(peers: u32) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("spoofed.pcap");
    let frames = frames();
    let total = frames.len() as f64;
    write_pcap(&f, DataLink::RAW, &frames);
    // The spoofed sources form one peer group.
    let cfg = dir.path().join("groups.toml");
    std::fs::write(&cfg, "[peer-groups]\n\"11.0.0.0/8\" = \"spoofed\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_icmpmon"))
        .arg("--config")
        .arg(&cfg)
        .args(["--source", "pcap:-", "--headless", "--metrics-peers"])
        .arg(peers.to_string())
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = bound_port(&mut child);
    // The pipe stays open: icmpmon keeps running, and serving, after the
    // last packet.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&f).unwrap()).unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        if let Some(t) = scrape(port) {
            if value(&t, "icmpmon_events_total") == Some(total) {
                break t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "icmpmon did not count {total} events in time"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let rss = peak_rss_kib(&child);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "a metrics daemon writes no rows");

    let series: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let n = peers as usize;
    let labelled = |name: &str| {
        series
            .iter()
            .filter(|l| l.starts_with(name) && !l.contains("requester=\"other\""))
            .count()
    };
    assert_eq!(labelled("icmpmon_echo_requests_total{"), n);
    assert_eq!(labelled("icmpmon_echo_rtt_seconds_bucket{"), n * 19);
    assert_eq!(labelled("icmpmon_path_mtu_bytes{"), n);
    // Per pair: 4 counters and a histogram of 19 buckets, sum and count.
    // Beside them: at most 64 kinds plus other, in 3 directions; error
    // kinds; flags, stages and the endpoint's own; a handful of totals.
    let bound = (n + 1) * (4 + 21) + n + 65 * 3 + 40 + 6 + 5 + 7 + 10;
    assert!(series.len() <= bound, "{} series > {bound}", series.len());
    // Nothing is lost to the bound: the other pair holds the rest.
    let requests: f64 = series
        .iter()
        .filter(|l| l.starts_with("icmpmon_echo_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(requests, 100_000.0);
    // The pairs beyond the labelled ones are summed per group pair: every
    // spoofed request is under its group, labelled or in its other.
    let of_group = |other_only: bool| -> f64 {
        series
            .iter()
            .filter(|l| l.starts_with("icmpmon_echo_requests_total{"))
            .filter(|l| l.contains("requester_group=\"spoofed\""))
            .filter(|l| !other_only || l.contains("requester=\"other\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(of_group(false), 100_000.0);
    assert!(of_group(true) > 0.0);
    assert_eq!(
        value(&text, "icmpmon_messages_total{family=\"other\",direction=\"unknown\",type=\"other\",code=\"other\"}")
            .map(|v| v > 0.0),
        Some(true),
        "kinds beyond the table are counted as other"
    );
    assert!(rss < RSS_BOUND_KIB, "peak RSS {rss} KiB");
    eprintln!(
        "--metrics-peers {peers}: {} series, {} bytes, peak RSS {rss} KiB",
        series.len(),
        text.len()
    );
}

#[test]
fn series_stay_bounded_under_100k_spoofed_sources() {
    run(10);
}

#[test]
fn series_stay_bounded_with_1000_labelled_pairs() {
    run(1000);
}

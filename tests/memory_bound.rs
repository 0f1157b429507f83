//! Issue 10, item 1: memory stays bounded whatever the capture's length.
//! One test in its own binary: the bound is read from getrusage(CHILDREN),
//! the largest resident set of any child this process waited for.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{echo, ipv4_icmp, write_pcap};
use pcap_file::DataLink;

const BOUND_KIB: i64 = 64 * 1024;

fn max_child_rss_kib() -> i64 {
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    usage.max_rss()
}

#[test]
#[ignore = "streams 1 GB through a pipe (about a minute in a debug build); tests/run-all.sh runs it"]
fn dev_zero_and_a_1_gb_pipe_stay_under_64_mib() {
    let out = Command::new(env!("CARGO_BIN_EXE_icmpmon"))
        .args(["--source", "pcap:/dev/zero", "--csv", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(max_child_rss_kib() < BOUND_KIB);

    // 1 GB of valid echo requests and replies between 4096 peer pairs.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.pcap");
    let frames: Vec<(u64, Vec<u8>)> = (0..8192u32)
        .map(|i| {
            let peer = [10, 1, (i >> 8) as u8 & 0x0f, i as u8];
            let t = if i % 2 == 0 { 8 } else { 0 };
            let (src, dst) = if t == 8 {
                (peer, [10, 0, 0, 1])
            } else {
                ([10, 0, 0, 1], peer)
            };
            let mut m = echo(t, 7, (i / 2) as u16);
            m.extend_from_slice(&[0u8; 56]);
            (u64::from(i) * 1000, ipv4_icmp(src, dst, &m))
        })
        .collect();
    write_pcap(&f, DataLink::RAW, &frames);
    let file = std::fs::read(&f).unwrap();
    let (header, records) = file.split_at(24);
    let mut child = Command::new(env!("CARGO_BIN_EXE_icmpmon"))
        .args(["--source", "pcap:-", "--csv", "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(header).unwrap();
    let mut sent = 0usize;
    while sent < 1 << 30 {
        stdin.write_all(records).unwrap();
        sent += records.len();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let rows: u64 = err
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rows="))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(rows as usize, sent / records.len() * frames.len());
    let rss = max_child_rss_kib();
    println!("largest resident set: {rss} KiB for {sent} bytes through a pipe");
    assert!(rss < BOUND_KIB, "{rss} KiB");
}

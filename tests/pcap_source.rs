//! `--source pcap:FILE` end to end: fixtures are written here with
//! pcap-file, then the real binary reads them without privileges.

mod common;

use std::borrow::Cow;
use std::process::Output;
use std::time::Duration;

use common::{echo, ether_vlan, icmpmon, ipv4, ipv6, pcap_to_csv, write_pcap};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

fn csv_rows(out: &Output) -> Vec<Vec<String>> {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let mut lines = text.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("timestamp,source,direction"));
    lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn ethernet_vlan_capture_to_csv() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("eth.pcap");
    let udp = [0x9c, 0x40, 0x82, 0x35, 0, 8, 0, 0];
    let quoted = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &udp);
    let unreach = [vec![3, 3, 0, 0, 0, 0, 0, 0], quoted].concat();
    write_pcap(
        &f,
        DataLink::ETHERNET,
        &[
            (
                1_700_000_000_000_001_000,
                ether_vlan(
                    0x0800,
                    &ipv4(1, [10, 0, 0, 1], [10, 0, 0, 2], &echo(8, 9, 1)),
                ),
            ),
            (1_700_000_000_000_002_000, ether_vlan(0x0806, &[0; 28])),
            (
                1_700_000_000_000_003_000,
                ether_vlan(0x0800, &ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &udp)),
            ),
            (
                1_700_000_000_000_004_000,
                ether_vlan(0x0800, &ipv4(1, [10, 0, 0, 2], [10, 0, 0, 1], &unreach)),
            ),
            (
                1_700_000_000_000_005_000,
                ether_vlan(0x86dd, &ipv6(58, 1, 2, &echo(129, 9, 1))),
            ),
        ],
    );
    let out = pcap_to_csv(&f);
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][0], "2023-11-14T22:13:20.000001000Z");
    assert_eq!(
        (&*rows[0][1], &*rows[0][2], &*rows[0][9]),
        ("pcap", "-", "echo-request")
    );
    assert_eq!((&*rows[0][10], &*rows[0][11]), ("9", "1"));
    assert_eq!(
        &rows[1][9..],
        [
            "port-unreachable",
            "",
            "",
            "64",
            "56",
            "",
            "17",
            "10.0.0.1",
            "10.0.0.2",
            "40000",
            "33333",
            "",
            "",
            "",
            "",
            ""
        ]
    );
    assert_eq!(
        (&*rows[2][4], &*rows[2][5], &*rows[2][9]),
        ("6", "fd00::1", "echo-reply")
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not ICMP 1"), "{err}");
    assert!(err.contains("not_ip=1"), "{err}");
}

/// Attribution is about this host's sockets now: a capture file's
/// packets are not, so its rows name no process and nothing is looked up
/// (not even for an error quoting a UDP flow, which a live source would).
#[test]
fn a_capture_file_names_no_process_and_makes_no_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("unreach.pcap");
    let udp = [0x9c, 0x40, 0x82, 0x35, 0, 8, 0, 0];
    let quoted = ipv4(17, [127, 0, 0, 1], [127, 0, 0, 1], &udp);
    let unreach = [vec![3, 3, 0, 0, 0, 0, 0, 0], quoted].concat();
    write_pcap(
        &f,
        DataLink::IPV4,
        &[
            (
                1_000,
                ipv4(1, [127, 0, 0, 1], [127, 0, 0, 1], &echo(8, 9, 1)),
            ),
            (2_000, ipv4(1, [127, 0, 0, 1], [127, 0, 0, 1], &unreach)),
        ],
    );
    let summary = dir.path().join("s.json");
    let out = icmpmon(&[
        "--source",
        &format!("pcap:{}", f.display()),
        "--jsonl",
        "-",
        "--summary-json",
        summary.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        for k in ["pid", "comm", "cgroup"] {
            assert_eq!(r[k], serde_json::Value::Null, "{k} in {r}");
        }
    }
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["lookups"], 0, "{s}");
    assert_eq!(s["snapshot"]["attribution"]["asked"], 0);
    assert_eq!(
        s["snapshot"]["kernel"],
        serde_json::Value::Null,
        "no kernel sample for a file"
    );
}

#[test]
fn cooked_v2_keeps_direction_and_jsonl_matches() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("sll2.pcap");
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 4, 6, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    sll2.extend_from_slice(&ipv4(1, [127, 0, 0, 1], [127, 0, 0, 1], &echo(0, 5, 6)));
    write_pcap(&f, DataLink::LINUX_SLL2, &[(1_000_000_000, sll2)]);
    let out = icmpmon(&["--source", &format!("pcap:{}", f.display()), "--jsonl", "-"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["direction"], "out");
    assert_eq!(v["kind"], "echo-reply");
    assert_eq!(v["timestamp"], "1970-01-01T00:00:01.000000000Z");
    assert_eq!(v["length"], 36);
}

#[test]
fn pcapng_timestamps_follow_if_tsresol() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ts.pcapng");
    let mut w = PcapNgWriter::new(std::fs::File::create(&f).unwrap()).unwrap();
    let pkt = ipv4(1, [192, 0, 2, 1], [192, 0, 2, 2], &echo(8, 1, 1));
    // Interface 0: default resolution (microseconds); interface 1: ns.
    for opts in [vec![], vec![InterfaceDescriptionOption::IfTsResol(9)]] {
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: 0,
            options: opts,
        })
        .unwrap();
    }
    // pcap-file stores EPB timestamps as raw units in a Duration's nanos.
    for (iface, units) in [
        (0, 1_700_000_000_123_456u64),
        (1, 1_700_000_000_123_456_789),
    ] {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: iface,
            timestamp: Duration::from_nanos(units),
            original_len: pkt.len() as u32,
            data: Cow::Borrowed(&pkt),
            options: vec![],
        })
        .unwrap();
    }
    drop(w);
    let rows = csv_rows(&pcap_to_csv(&f));
    assert_eq!(rows[0][0], "2023-11-14T22:13:20.123456000Z");
    assert_eq!(rows[1][0], "2023-11-14T22:13:20.123456789Z");
}

#[test]
fn damaged_file_keeps_good_rows_and_names_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cut.pcap");
    let pkt = ipv4(1, [10, 0, 0, 1], [10, 0, 0, 2], &echo(8, 1, 1));
    write_pcap(
        &f,
        DataLink::RAW,
        &[(1, pkt.clone()), (2, pkt.clone()), (3, pkt)],
    );
    let full = std::fs::read(&f).unwrap();
    std::fs::write(&f, &full[..full.len() - 10]).unwrap();
    let out = icmpmon(&["--source", &format!("pcap:{}", f.display()), "--csv", "-"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(csv_rows(&out).len(), 2);
    let err = String::from_utf8_lossy(&out.stderr);
    // 24-byte file header + 2 × (16-byte record header + 36 bytes).
    assert!(err.contains("damaged at byte 128"), "{err}");
    // Said once (issue 20.9), as the last line, after the summary's.
    assert_eq!(err.matches("damaged at byte").count(), 1, "{err}");
    assert!(
        err.trim_end().lines().last().unwrap().contains("damaged"),
        "{err}"
    );
}

#[test]
fn not_a_capture_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.txt");
    std::fs::write(&f, "hello world").unwrap();
    let out = icmpmon(&["--source", &format!("pcap:{}", f.display()), "--csv", "-"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a pcap or pcapng file (it starts with 68656c6c)"),
        "{err}"
    );
    let missing = icmpmon(&["--source", "pcap:/nonexistent.pcap"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent.pcap"));
}

/// `--filter`, `--alerts` and `--summary-json` on one capture: a flood of
/// echo requests from 10.9.9.9 (7 within a second), other pings and a
/// port unreachable.
#[test]
fn filter_alerts_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("flood.pcap");
    let summary = dir.path().join("summary.json");
    let csv = dir.path().join("rows.csv");
    let t0 = 1_700_000_000_000_000_000u64;
    let mut frames: Vec<(u64, Vec<u8>)> = (0..7u16)
        .map(|seq| {
            (
                t0 + u64::from(seq) * 1_000_000,
                ipv4(1, [10, 9, 9, 9], [10, 0, 0, 1], &echo(8, 1, seq)),
            )
        })
        .collect();
    frames.push((
        t0 + 10_000_000,
        ipv4(1, [10, 0, 0, 5], [10, 0, 0, 1], &echo(8, 2, 1)),
    ));
    frames.push((
        t0 + 10_500_000,
        ipv4(1, [10, 0, 0, 1], [10, 0, 0, 5], &echo(0, 2, 1)),
    ));
    let quoted = ipv4(
        17,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        &[0x9c, 0x40, 0x82, 0x35, 0, 8, 0, 0],
    );
    frames.push((
        t0 + 20_000_000,
        ipv4(
            1,
            [10, 0, 0, 2],
            [10, 0, 0, 1],
            &[vec![3, 3, 0, 0, 0, 0, 0, 0], quoted].concat(),
        ),
    ));
    write_pcap(&f, DataLink::RAW, &frames);

    let out = icmpmon(&[
        "--source",
        &format!("pcap:{}", f.display()),
        "--filter",
        "src 10.9.9.9 or (type port-unreachable and family 4)",
        "--flood-pps",
        "5",
        "--alerts",
        "-",
        "--csv",
        csv.to_str().unwrap(),
        "--summary-json",
        summary.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(rows.lines().count(), 1 + 7 + 1, "{rows}");
    assert!(!rows.contains("10.0.0.5"), "{rows}");
    let alerts: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["flag"], "echo-flood");
    assert_eq!(alerts[0]["subject"], "10.9.9.9");
    assert_eq!(alerts[0]["timestamp"], "2023-11-14T22:13:20.005000000Z");
    assert!(err.contains("flag echo-flood 10.9.9.9"), "{err}");
    assert!(err.contains("filtered out 2"), "{err}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["filtered"], 2);
    assert_eq!(
        s["filter"],
        "src 10.9.9.9 or (type port-unreachable and family 4)"
    );
    assert_eq!(s["snapshot"]["echo"]["requests"], 7);
    assert_eq!(s["snapshot"]["errors"], 1);
    assert_eq!(
        s["snapshot"]["error_flows"][0]["subject"],
        "udp 10.0.0.1:40000 → 10.0.0.2:33333"
    );
}

#[test]
fn extreme_thresholds_neither_panic_nor_raise() {
    // Thresholds at u64::MAX once overflowed (`threshold + 1`).
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("flood.pcap");
    let t0 = 1_700_000_000_000_000_000u64;
    let frames: Vec<(u64, Vec<u8>)> = (0..20u16)
        .map(|seq| {
            (
                t0 + u64::from(seq) * 1_000,
                ipv4(1, [10, 9, 9, 9], [10, 0, 0, 1], &echo(8, 1, seq)),
            )
        })
        .collect();
    write_pcap(&f, DataLink::RAW, &frames);
    let max = u64::MAX.to_string();
    let out = icmpmon(&[
        "--source",
        &format!("pcap:{}", f.display()),
        "--csv",
        "/dev/null",
        "--alerts",
        "-",
        "--flood-pps",
        &max,
        "--unreachable-pps",
        &max,
        "--ttl-exceeded-pps",
        &max,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(out.stdout.is_empty(), "no alert expected");
    // And the same flood with a low threshold does raise one.
    let out = icmpmon(&[
        "--source",
        &format!("pcap:{}", f.display()),
        "--csv",
        "/dev/null",
        "--alerts",
        "-",
        "--flood-pps",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo-flood"));
}

/// Issue 20.9: a record longer than libpcap's maximum is damage, said the
/// same way from a file and through a pipe (the file used to say "ends in
/// the middle of a packet record", the pipe "longer than 1 MiB").
#[test]
fn an_oversized_record_is_the_same_damage_from_a_file_and_a_pipe() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.pcap");
    let pkt = ipv4(1, [10, 0, 0, 1], [10, 0, 0, 2], &echo(8, 1, 1));
    write_pcap(&f, DataLink::RAW, &[(1, pkt)]);
    let mut bytes = std::fs::read(&f).unwrap();
    // A second record header claiming 2 GiB (in the file's byte order),
    // and a little data.
    let big_endian = bytes[0] == 0xa1;
    for v in [2u32, 0, 1 << 31, 1 << 31] {
        let b = if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        bytes.extend_from_slice(&b);
    }
    bytes.extend_from_slice(&[0; 64]);
    std::fs::write(&f, &bytes).unwrap();
    let from_file = icmpmon(&["--source", &format!("pcap:{}", f.display()), "--csv", "-"]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_icmpmon"))
        .args(["--source", "pcap:-", "--csv", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let from_pipe = child.wait_with_output().unwrap();
    for out in [&from_file, &from_pipe] {
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(csv_rows(out).len(), 1);
        let err = String::from_utf8_lossy(&out.stderr);
        // libpcap's words (the file's snap length is 65535).
        assert!(
            err.contains("invalid packet capture length 2147483648, bigger than snaplen of 65535"),
            "{err}"
        );
    }
}

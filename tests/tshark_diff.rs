//! Differential test: icmpmon's CSV must agree, field by field, with
//! `tshark -T fields` on the same capture. The capture is built here with
//! one frame per case; frame N carries timestamp N seconds, which ties each
//! CSV row back to its tshark line.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{echo, ether_vlan, ipv4, ipv6, pcap_to_csv, write_pcap};
use pcap_file::DataLink;

const UDP: [u8; 8] = [0x9c, 0x40, 0x82, 0x35, 0, 16, 0, 0];
const TCP8: [u8; 8] = [0x1f, 0x90, 0x01, 0xbb, 0, 0, 0, 1];

fn v4_error(t: u8, code: u8, rest: [u8; 4], quoted: Vec<u8>) -> Vec<u8> {
    let icmp = [vec![t, code, 0, 0], rest.to_vec(), quoted].concat();
    ipv4(1, [198, 51, 100, 1], [10, 0, 0, 1], &icmp)
}

fn v6_icmp(t: u8, code: u8, rest: [u8; 4], body: Vec<u8>) -> Vec<u8> {
    let icmp = [vec![t, code, 0, 0], rest.to_vec(), body].concat();
    ipv6(58, 9, 1, &icmp)
}

fn v6_addr(last: u8) -> Vec<u8> {
    let mut a = vec![0u8; 16];
    a[0] = 0xfd;
    a[15] = last;
    a
}

/// The frames, and which of them icmpmon must refuse as malformed.
fn fixture() -> (Vec<Vec<u8>>, Vec<usize>) {
    let q4_udp = ipv4(17, [10, 0, 0, 1], [203, 0, 113, 7], &UDP);
    let q4_tcp = ipv4(6, [10, 0, 0, 1], [203, 0, 113, 8], &TCP8);
    let q6_udp = ipv6(17, 1, 7, &UDP);
    let q6_tcp = ipv6(6, 1, 8, &TCP8);
    let ip_frames = vec![
        ipv4(1, [10, 0, 0, 1], [10, 0, 0, 2], &echo(8, 0x1234, 1)),
        ipv4(1, [10, 0, 0, 2], [10, 0, 0, 1], &echo(0, 0x1234, 1)),
        ipv6(58, 1, 2, &echo(128, 77, 3)),
        ipv6(58, 2, 1, &echo(129, 77, 3)),
        v4_error(3, 3, [0; 4], q4_udp.clone()),
        v4_error(3, 1, [0; 4], q4_tcp.clone()),
        v4_error(3, 0, [0; 4], q4_udp.clone()),
        v4_error(11, 0, [0; 4], q4_udp.clone()),
        v4_error(3, 4, [0, 0, 0x05, 0x78], q4_tcp.clone()),
        v4_error(5, 1, [192, 0, 2, 1], q4_udp),
        v6_icmp(1, 4, [0; 4], q6_udp.clone()),
        v6_icmp(2, 0, [0, 0, 0x05, 0x00], q6_tcp),
        v6_icmp(3, 0, [0; 4], q6_udp),
        v6_icmp(135, 0, [0; 4], v6_addr(2)),
        v6_icmp(136, 0, [0x60, 0, 0, 0], v6_addr(2)),
        // Truncated: an ICMP header of 3 bytes.
        ipv4(1, [10, 0, 0, 1], [10, 0, 0, 2], &[8, 0, 0]),
        // Garbage behind an IPv4 ethertype.
        vec![
            0x20, 0xff, 0x13, 0x37, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
        ],
    ];
    let mut frames: Vec<Vec<u8>> = ip_frames
        .iter()
        .map(|p| ether_vlan(0x0800 + if p[0] >> 4 == 6 { 0x7edd } else { 0 }, p))
        .collect();
    // ARP: not IP at all.
    frames.push(ether_vlan(0x0806, &[0; 28]));
    (frames, vec![16, 17])
}

/// tshark fields, by name, for one frame (each a list of occurrences).
type Fields = BTreeMap<&'static str, Vec<String>>;

const TSHARK_FIELDS: [&str; 27] = [
    "frame.number",
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.proto",
    "ipv6.nxt",
    "ip.ttl",
    "ipv6.hlim",
    "icmp.type",
    "icmp.code",
    "icmpv6.type",
    "icmpv6.code",
    "icmp.ident",
    "icmp.seq",
    "icmpv6.echo.identifier",
    "icmpv6.echo.sequence_number",
    "udp.srcport",
    "udp.dstport",
    "tcp.srcport",
    "tcp.dstport",
    "icmp.mtu",
    "icmpv6.mtu",
    "icmp.redir_gw",
    "icmpv6.nd.ns.target_address",
    "icmpv6.nd.na.target_address",
];

fn tshark(path: &std::path::Path) -> BTreeMap<u64, Fields> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(path);
    cmd.args([
        "-Y",
        "icmp || icmpv6",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
    ]);
    for f in TSHARK_FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .expect("tshark must be installed for this test (tests/setup-debian.sh installs it)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .map(|line| {
            let fields: Fields = TSHARK_FIELDS
                .iter()
                .zip(line.split('\t'))
                .map(|(name, v)| {
                    let occ = if v.is_empty() {
                        vec![]
                    } else {
                        v.split('|').map(str::to_owned).collect()
                    };
                    (*name, occ)
                })
                .collect();
            (fields["frame.number"][0].parse().unwrap(), fields)
        })
        .collect()
}

/// Field `name`'s occurrence `i`, or "" (an empty CSV cell). tshark
/// prints some integers in hex (`0x004d`): those become decimal.
fn occ(f: &Fields, name: &str, i: usize) -> String {
    let v = f
        .get(name)
        .and_then(|v| v.get(i))
        .cloned()
        .unwrap_or_default();
    match v.strip_prefix("0x").map(|h| u64::from_str_radix(h, 16)) {
        Some(Ok(n)) => n.to_string(),
        _ => v,
    }
}

/// What icmpmon's CSV row should say, derived from tshark's fields.
fn expected(f: &Fields) -> BTreeMap<&'static str, String> {
    let v4 = !occ(f, "ip.src", 0).is_empty();
    let (ip, t) = if v4 {
        ("ip", "icmp")
    } else {
        ("ipv6", "icmpv6")
    };
    let pick = |a: &str, b: &str| if v4 { occ(f, a, 0) } else { occ(f, b, 0) };
    let inner_proto = if v4 {
        occ(f, "ip.proto", 1)
    } else {
        occ(f, "ipv6.nxt", 1)
    };
    let info = [
        ("mtu=", pick("icmp.mtu", "icmpv6.mtu")),
        ("gateway=", occ(f, "icmp.redir_gw", 0)),
        ("target=", occ(f, "icmpv6.nd.ns.target_address", 0)),
        ("target=", occ(f, "icmpv6.nd.na.target_address", 0)),
    ]
    .into_iter()
    .find(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}{v}"))
    .unwrap_or_default();
    let port = |udp: &str, tcp: &str| {
        let u = occ(f, udp, 0);
        if u.is_empty() {
            occ(f, tcp, 0)
        } else {
            u
        }
    };
    BTreeMap::from([
        ("family", if v4 { "4" } else { "6" }.to_owned()),
        ("src", occ(f, &format!("{ip}.src"), 0)),
        ("dst", occ(f, &format!("{ip}.dst"), 0)),
        ("ttl", pick("ip.ttl", "ipv6.hlim")),
        ("icmp_type", occ(f, &format!("{t}.type"), 0)),
        ("icmp_code", occ(f, &format!("{t}.code"), 0)),
        ("id", pick("icmp.ident", "icmpv6.echo.identifier")),
        ("seq", pick("icmp.seq", "icmpv6.echo.sequence_number")),
        ("inner_proto", inner_proto),
        ("inner_src", occ(f, &format!("{ip}.src"), 1)),
        ("inner_dst", occ(f, &format!("{ip}.dst"), 1)),
        ("inner_sport", port("udp.srcport", "tcp.srcport")),
        ("inner_dport", port("udp.dstport", "tcp.dstport")),
        ("info", info),
    ])
}

#[test]
#[ignore = "needs tshark: tests/run-all.sh runs it"]
fn csv_agrees_with_tshark_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixture.pcap");
    let (frames, malformed) = fixture();
    let timed: Vec<(u64, Vec<u8>)> = frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| ((i as u64 + 1) * 1_000_000_000, f))
        .collect();
    write_pcap(&path, DataLink::ETHERNET, &timed);

    let out = pcap_to_csv(&path);
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let header = reader.headers().unwrap().clone();
    let mut rows: BTreeMap<u64, csv::StringRecord> = BTreeMap::new();
    for rec in reader.records() {
        let rec = rec.unwrap();
        // 1970-01-01T00:00:NN.000000000Z -> frame NN
        let ts = &rec[0];
        let secs: u64 = ts[17..19].parse().unwrap();
        assert_eq!(&ts[19..], ".000000000Z", "timestamp from the file: {ts}");
        rows.insert(secs, rec);
    }

    let shark = tshark(&path);
    // Every ICMP frame tshark sees is a row, but the ones icmpmon must
    // refuse as malformed; and nothing else is.
    let mut want_frames: Vec<u64> = shark
        .keys()
        .copied()
        .filter(|n| !malformed.contains(&(*n as usize)))
        .collect();
    want_frames.sort_unstable();
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), want_frames);
    assert_eq!(want_frames.len(), 15, "tshark saw {:?}", shark.keys());

    for (frame, fields) in &shark {
        let Some(row) = rows.get(frame) else { continue };
        for (col, want) in expected(fields) {
            let i = header.iter().position(|h| h == col).unwrap();
            assert_eq!(
                &row[i], want,
                "frame {frame}, column {col}: icmpmon {:?} vs tshark {fields:?}",
                row
            );
        }
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("parse errors 2"), "{err}");
}

/// Issue 20 (`--write`): the packets a run keeps, saved as pcapng and as
/// pcap, read back by tshark as the same ICMP messages as the input, by
/// tcpdump, and by icmpmon itself as the same rows; `--filter` applies.
#[test]
#[ignore = "needs tshark and tcpdump: tests/run-all.sh runs it"]
fn written_captures_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fixture.pcap");
    let (frames, _) = fixture();
    let timed: Vec<(u64, Vec<u8>)> = frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| ((i as u64 + 1) * 1_000_000_000, f))
        .collect();
    write_pcap(&input, DataLink::ETHERNET, &timed);
    // What tshark says of a capture's ICMP messages, in order.
    let icmp = |path: &std::path::Path| -> Vec<(String, String)> {
        tshark(path)
            .values()
            .map(|f| {
                let time = occ(f, "frame.time_epoch", 0);
                let what = [
                    "ip.src",
                    "ipv6.src",
                    "icmp.type",
                    "icmpv6.type",
                    "icmp.code",
                ]
                .map(|n| occ(f, n, 0))
                .join(" ");
                (time, what)
            })
            .collect()
    };
    let want = icmp(&input);
    let rows = |path: &std::path::Path| -> Vec<String> {
        let out = pcap_to_csv(path);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|l| {
                // All but direction and ifname: the input's frames have
                // neither (saved, an unknown direction reads as in).
                let mut cols: Vec<&str> = l.split(',').collect();
                cols.drain(2..4);
                cols.join(",")
            })
            .collect()
    };
    for name in ["saved.pcapng", "saved.pcap"] {
        let saved = dir.path().join(name);
        let out = Command::new(env!("CARGO_BIN_EXE_icmpmon"))
            .arg("--source")
            .arg(format!("pcap:{}", input.display()))
            .args(["--csv", "/dev/null", "--write"])
            .arg(&saved)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // The 15 good ICMP messages (the malformed 2 are not kept).
        assert!(err.contains("15 packets saved"), "{err}");
        let got = icmp(&saved);
        let good: Vec<_> = want
            .iter()
            .filter(|w| got.iter().any(|g| g.0 == w.0))
            .cloned()
            .collect();
        assert_eq!(got.len(), 15, "{name}: {got:?}");
        assert_eq!(got, good, "{name}");
        assert_eq!(rows(&saved), rows(&input), "{name}");
        let dump = Command::new("tcpdump")
            .args(["-nn", "-r"])
            .arg(&saved)
            .output()
            .unwrap();
        assert!(dump.status.success(), "{name}: tcpdump refused it");
        assert_eq!(
            String::from_utf8_lossy(&dump.stdout).lines().count(),
            15,
            "{name}"
        );
    }
    // --filter: only what the run keeps is saved.
    let saved = dir.path().join("v6.pcapng");
    let out = Command::new(env!("CARGO_BIN_EXE_icmpmon"))
        .arg("--source")
        .arg(format!("pcap:{}", input.display()))
        .args(["--csv", "/dev/null", "--filter", "family 6", "--write"])
        .arg(&saved)
        .output()
        .unwrap();
    assert!(out.status.success());
    let got = icmp(&saved);
    assert_eq!(got.len(), 7, "{got:?}");
    assert!(got.iter().all(|(_, w)| w.contains("fd")), "{got:?}");
}

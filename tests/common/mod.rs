//! Packet and capture-file builders shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};

pub fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
    p[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// IPv6 between fd00::SRC and fd00::DST.
pub fn ipv6(next: u8, src: u8, dst: u8, payload: &[u8]) -> Vec<u8> {
    let addr = |last: u8| {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = last;
        a
    };
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 255]);
    p.extend_from_slice(&addr(src));
    p.extend_from_slice(&addr(dst));
    p.extend_from_slice(payload);
    p
}

pub fn echo(t: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![t, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"payload!");
    m
}

/// The Internet checksum (RFC 1071) of `parts` laid end to end.
pub fn inet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet carrying `icmp`, with its ICMP checksum set.
pub fn ipv4_icmp(src: [u8; 4], dst: [u8; 4], icmp: &[u8]) -> Vec<u8> {
    let mut m = icmp.to_vec();
    let c = inet_checksum(&[&m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(1, src, dst, &m)
}

/// An IPv6 packet (fd00::SRC → fd00::DST) carrying `icmp`, with its
/// ICMPv6 checksum (pseudo-header included) set.
pub fn ipv6_icmp(src: u8, dst: u8, icmp: &[u8]) -> Vec<u8> {
    let mut p = ipv6(58, src, dst, icmp);
    let len = (icmp.len() as u32).to_be_bytes();
    let c = inet_checksum(&[&p[8..40], &len, &[0, 0, 0, 58], &p[40..]]);
    p[42..44].copy_from_slice(&c.to_be_bytes());
    p
}

/// An Ethernet II frame.
pub fn ether(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Ethernet frame with an 802.1Q tag.
pub fn ether_vlan(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0x00, 0x00, 0x64];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn write_pcap(path: &Path, link: DataLink, frames: &[(u64, Vec<u8>)]) {
    write_pcap_with(path, link, TsResolution::MicroSecond, frames);
}

/// A pcap with nanosecond timestamps.
pub fn write_pcap_ns(path: &Path, link: DataLink, frames: &[(u64, Vec<u8>)]) {
    write_pcap_with(path, link, TsResolution::NanoSecond, frames);
}

/// A raw-IP pcap in memory, split into its 24-byte file header and its
/// records, for tests that stream a capture through a pipe in parts.
pub fn pcap_raw_parts(frames: &[(u64, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
    let header = PcapHeader {
        datalink: DataLink::RAW,
        ts_resolution: TsResolution::MicroSecond,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (ts_ns, f) in frames {
        w.write_packet(&PcapPacket::new(
            Duration::from_nanos(*ts_ns),
            f.len() as u32,
            f,
        ))
        .unwrap();
    }
    let mut bytes = w.into_writer();
    let records = bytes.split_off(24);
    (bytes, records)
}

fn write_pcap_with(path: &Path, link: DataLink, res: TsResolution, frames: &[(u64, Vec<u8>)]) {
    let header = PcapHeader {
        datalink: link,
        ts_resolution: res,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(std::fs::File::create(path).unwrap(), header).unwrap();
    for (ts_ns, f) in frames {
        w.write_packet(&PcapPacket::new(
            Duration::from_nanos(*ts_ns),
            f.len() as u32,
            f,
        ))
        .unwrap();
    }
}

/// Runs the real binary.
pub fn icmpmon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_icmpmon"))
        .args(args)
        .output()
        .expect("run icmpmon")
}

/// Runs `icmpmon --source pcap:FILE --csv -`, which must exit 0.
pub fn pcap_to_csv(file: &Path) -> Output {
    let out = icmpmon(&[
        "--source",
        &format!("pcap:{}", file.display()),
        "--csv",
        "-",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits (at most 10 s) until process `pid` catches signal `signo`: its
/// handler is installed, so the signal now means what icmpmon makes of it
/// rather than the default (death). Read from /proc/PID/status (SigCgt).
pub fn wait_signal_caught(pid: u32, signo: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signo - 1)) != 0);
        if caught {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} did not install a handler for signal {signo}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

//! Writes a synthetic ICMP capture for benchmarks:
//! `cargo run --release --example gen_icmp_pcap -- OUT.pcap [PACKETS]`.
//! Ethernet frames: IPv4 and IPv6 echo request/reply pairs from many hosts,
//! with a port unreachable quoting UDP every 16th packet.

use std::io::BufWriter;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
    p[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

fn ipv6(src: u16, dst: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[58, 64, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&src.to_be_bytes());
    p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&dst.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn icmp(t: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![t, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&[0x5a; 56]);
    m
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: gen_icmp_pcap OUT.pcap [PACKETS]")?;
    let count: u64 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(BufWriter::new(std::fs::File::create(&path)?), header)?;
    let start = 1_700_000_000_000_000_000u64;
    for i in 0..count {
        let host = (i / 2 % 5000) as u16;
        let seq = (i / 10_000) as u16;
        let (a, b) = ([10, 1, (host >> 8) as u8, host as u8], [10, 0, 0, 1]);
        let ip = match i % 16 {
            15 => {
                let udp = [0x9c, 0x40, 0x82, 0x35, 0, 8, 0, 0];
                let quoted = ipv4(b, a, &[vec![0x45], vec![0; 19], udp.to_vec()].concat()[..]);
                ipv4(a, b, &[vec![3, 3, 0, 0, 0, 0, 0, 0], quoted].concat())
            }
            12 | 14 => ipv6(host, 1, &icmp(128, host, seq)),
            13 => ipv6(1, host, &icmp(129, host, seq)),
            n if n % 2 == 0 => ipv4(a, b, &icmp(8, host, seq)),
            _ => ipv4(b, a, &icmp(0, host, seq)),
        };
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        frame.extend_from_slice(if ip[0] >> 4 == 6 {
            &[0x86, 0xdd]
        } else {
            &[0x08, 0x00]
        });
        frame.extend_from_slice(&ip);
        let ts = Duration::from_nanos(start + i * 10_000);
        w.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame))?;
    }
    Ok(())
}

//! The classic BPF program the packet socket runs in the kernel: ICMP over
//! IPv4, and ICMPv6 also behind IPv6 extension headers (libpcap's `icmp6`
//! reads only the fixed header's next-header field, so it misses MLD, which
//! sits behind a hop-by-hop header), optionally on some interfaces only.
//! Accepted packets are cut to the snap length by the return value.
//!
//! The socket is SOCK_DGRAM: offset 0 is the network header, in both
//! directions; the link protocol and the interface come from the kernel's
//! ancillary loads.

use libc::sock_filter;

// linux/bpf_common.h and linux/filter.h.
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const W: u16 = 0x00;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const ADD: u16 = 0x00;
const LSH: u16 = 0x60;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const K: u16 = 0x00;
const X: u16 = 0x08;
const MISC: u16 = 0x07;
const TAX: u16 = 0x00;

const AD_PROTOCOL: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32;
const AD_IFINDEX: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_IFINDEX) as u32;

/// IPv6 extension headers followed before giving up (a packet with more is
/// not taken; real ICMPv6 has one or two).
pub(crate) const MAX_EXTENSION_HEADERS: usize = 6;

/// A jump target, resolved when the program is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Accept,
    Reject,
    /// The instruction with this index.
    At(usize),
}

#[derive(Debug, Default)]
struct Builder {
    code: Vec<(u16, Label, Label, u32)>,
}

impl Builder {
    fn op(&mut self, code: u16, k: u32) -> &mut Self {
        let next = Label::At(self.code.len() + 1);
        self.code.push((code, next, next, k));
        self
    }
    /// `if A == k goto yes else goto no`.
    fn jeq(&mut self, k: u32, yes: Label, no: Label) -> &mut Self {
        self.code.push((JMP | JEQ | K, yes, no, k));
        self
    }
    fn here(&self) -> Label {
        Label::At(self.code.len())
    }
    fn finish(self, snaplen: u32) -> Vec<sock_filter> {
        let n = self.code.len();
        let (accept, reject) = (n, n + 1);
        let target = |from: usize, l: Label| -> u8 {
            let to = match l {
                Label::Accept => accept,
                Label::Reject => reject,
                Label::At(i) => i,
            };
            // Classic BPF jumps go forward by at most 255.
            u8::try_from(to - from - 1).expect("forward jump within 255")
        };
        let mut out: Vec<sock_filter> = self
            .code
            .iter()
            .enumerate()
            .map(|(i, &(code, jt, jf, k))| match code {
                c if c == JMP | JEQ | K => sock_filter {
                    code,
                    jt: target(i, jt),
                    jf: target(i, jf),
                    k,
                },
                // `ja` keeps its target in k.
                c if c == JMP | JA => sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k: u32::from(target(i, jt)),
                },
                _ => sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                },
            })
            .collect();
        out.push(sock_filter {
            code: RET | K,
            jt: 0,
            jf: 0,
            k: snaplen,
        });
        out.push(sock_filter {
            code: RET | K,
            jt: 0,
            jf: 0,
            k: 0,
        });
        out
    }
}

/// The program: accept ICMP/ICMPv6 (cut to `snaplen`) arriving on or
/// leaving `ifindexes` (any interface when empty).
pub(crate) fn program(ifindexes: &[u32], snaplen: u32) -> Vec<sock_filter> {
    let mut b = Builder::default();
    if !ifindexes.is_empty() {
        b.op(LD | W | ABS, AD_IFINDEX);
        let after = b.code.len() + ifindexes.len();
        for (i, &ix) in ifindexes.iter().enumerate() {
            let no = if i + 1 == ifindexes.len() {
                Label::Reject
            } else {
                Label::At(b.code.len() + 1)
            };
            b.jeq(ix, Label::At(after), no);
        }
    }
    b.op(LD | W | ABS, AD_PROTOCOL);
    // Layout: [v4 test][v6 test] v4: 2 insns, then v6.
    let at = b.code.len();
    b.jeq(libc::ETH_P_IP as u32, Label::At(at + 2), Label::At(at + 1));
    b.jeq(libc::ETH_P_IPV6 as u32, Label::At(at + 4), Label::Reject);
    // IPv4: protocol 1 (every fragment, like libpcap's `icmp`).
    b.op(LD | B | ABS, 9);
    b.jeq(1, Label::Accept, Label::Reject);
    // IPv6: A = next header, X = where that header starts.
    b.op(LD | B | ABS, 6);
    b.op(LDX | W | IMM, 40);
    for _ in 0..MAX_EXTENSION_HEADERS {
        b.jeq(58, Label::Accept, Label::At(b.code.len() + 1));
        // Offsets of this step's blocks, fixed by the layout below.
        let s = b.code.len();
        let (options, fragment, auth) = (s + 6, s + 10, s + 12);
        let advance = s + 15;
        b.jeq(0, Label::At(options), Label::At(s + 1)); // hop-by-hop
        b.jeq(43, Label::At(options), Label::At(s + 2)); // routing
        b.jeq(60, Label::At(options), Label::At(s + 3)); // destination options
        b.jeq(44, Label::At(fragment), Label::At(s + 4));
        b.jeq(51, Label::At(auth), Label::Reject);
        b.op(JMP | JA, 0); // s + 5: unreachable filler, keeps offsets simple
        debug_assert_eq!(b.here(), Label::At(options));
        // Options headers: (length + 1) × 8 bytes.
        b.op(LD | B | IND, 1)
            .op(ALU | ADD | K, 1)
            .op(ALU | LSH | K, 3);
        let ja = b.code.len();
        b.code
            .push((JMP | JA, Label::At(advance), Label::At(advance), 0));
        debug_assert_eq!(b.here(), Label::At(fragment));
        // Fragment header: 8 bytes.
        b.op(LD | W | IMM, 8);
        let ja2 = b.code.len();
        b.code
            .push((JMP | JA, Label::At(advance), Label::At(advance), 0));
        debug_assert_eq!(b.here(), Label::At(auth));
        // Authentication header: (length + 2) × 4 bytes.
        b.op(LD | B | IND, 1)
            .op(ALU | ADD | K, 2)
            .op(ALU | LSH | K, 2);
        debug_assert_eq!(b.here(), Label::At(advance));
        let _ = (ja, ja2);
        // A = this header's length: read its next-header byte, move X on.
        b.op(ST, 0)
            .op(LD | B | IND, 0)
            .op(ST, 1)
            .op(LD | MEM, 0)
            .op(ALU | ADD | X, 0)
            .op(MISC | TAX, 0)
            .op(LD | MEM, 1);
    }
    b.jeq(58, Label::Accept, Label::Reject);
    b.finish(snaplen)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic BPF interpreter for the instructions `program` uses, as
    /// the kernel runs them (out-of-bounds loads end with 0).
    fn run(code: &[sock_filter], pkt: &[u8], proto: u16, ifindex: u32) -> u32 {
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0;
        let load = |off: u32, size: usize| -> Option<u32> {
            match off {
                AD_PROTOCOL => Some(u32::from(proto)),
                AD_IFINDEX => Some(ifindex),
                _ => {
                    let o = off as usize;
                    let b = pkt.get(o..o + size)?;
                    Some(b.iter().fold(0, |v, &x| (v << 8) | u32::from(x)))
                }
            }
        };
        loop {
            let i = code[pc];
            pc += 1;
            let size = if i.code & 0x18 == B { 1 } else { 4 };
            match i.code {
                c if c == LD | W | ABS || c == LD | B | ABS => match load(i.k, size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == LD | B | IND => match load(x.wrapping_add(i.k), 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == LD | W | IMM => a = i.k,
                c if c == LDX | W | IMM => x = i.k,
                c if c == LD | MEM => a = mem[i.k as usize],
                ST => mem[i.k as usize] = a,
                c if c == ALU | ADD | K => a = a.wrapping_add(i.k),
                c if c == ALU | ADD | X => a = a.wrapping_add(x),
                c if c == ALU | LSH | K => a <<= i.k,
                c if c == MISC | TAX => x = a,
                c if c == JMP | JA => pc += i.k as usize,
                c if c == JMP | JEQ | K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                c if c == RET | K => return i.k,
                c => panic!("opcode {c:#x} not interpreted"),
            }
        }
    }

    fn v6(next: u8, ext: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        p.extend([0; 32]);
        p.extend_from_slice(ext);
        p.extend([128, 0, 0, 0]);
        p
    }

    const SNAP: u32 = 256;

    #[test]
    fn icmp_over_ipv4_and_plain_ipv6() {
        let code = program(&[], SNAP);
        let mut v4 = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1];
        v4.extend([0; 18]);
        assert_eq!(run(&code, &v4, 0x0800, 2), SNAP);
        v4[9] = 6;
        assert_eq!(run(&code, &v4, 0x0800, 2), 0);
        assert_eq!(run(&code, &v6(58, &[]), 0x86dd, 2), SNAP);
        assert_eq!(run(&code, &v6(17, &[]), 0x86dd, 2), 0);
        // The link protocol decides, not the first nibble.
        assert_eq!(run(&code, &v6(58, &[]), 0x0806, 2), 0);
    }

    #[test]
    fn icmpv6_behind_extension_headers() {
        let code = program(&[], SNAP);
        // MLD: hop-by-hop (8 bytes, router alert) then ICMPv6.
        let hbh = [58, 0, 5, 2, 0, 0, 1, 0];
        assert_eq!(run(&code, &v6(0, &hbh), 0x86dd, 2), SNAP);
        // Hop-by-hop then a 16-byte destination options header.
        let mut two = vec![60, 0, 1, 4, 0, 0, 0, 0];
        two.extend([58, 1]);
        two.extend([1, 12]);
        two.extend([0; 12]);
        assert_eq!(run(&code, &v6(0, &two), 0x86dd, 2), SNAP);
        // A fragment header, then an authentication header (4 words).
        let mut frag_ah = vec![51, 0, 0, 1, 0, 0, 0, 9];
        frag_ah.extend([58, 2, 0, 0]);
        frag_ah.extend([0; 12]);
        assert_eq!(run(&code, &v6(44, &frag_ah), 0x86dd, 2), SNAP);
        // UDP behind hop-by-hop.
        let udp = [17, 0, 5, 2, 0, 0, 1, 0];
        assert_eq!(run(&code, &v6(0, &udp), 0x86dd, 2), 0);
        // A header chain cut short.
        assert_eq!(run(&code, &v6(0, &[])[..42], 0x86dd, 2), 0);
        // One header more than followed: given up on.
        let mut many = Vec::new();
        for _ in 0..=MAX_EXTENSION_HEADERS {
            many.extend([60, 0, 1, 0, 0, 0, 0, 0]);
        }
        *many.last_mut().unwrap() = 0;
        let n = many.len();
        many[n - 8] = 58;
        assert_eq!(run(&code, &v6(60, &many), 0x86dd, 2), 0);
        many.drain(..8);
        assert_eq!(run(&code, &v6(60, &many), 0x86dd, 2), SNAP);
    }

    #[test]
    fn interfaces_restrict() {
        let code = program(&[3, 7], SNAP);
        let p = v6(58, &[]);
        assert_eq!(run(&code, &p, 0x86dd, 3), SNAP);
        assert_eq!(run(&code, &p, 0x86dd, 7), SNAP);
        assert_eq!(run(&code, &p, 0x86dd, 4), 0);
    }

    #[test]
    fn jumps_fit() {
        // `finish` panics on a jump beyond 255; the longest program.
        let ifs: Vec<u32> = (1..=64).collect();
        assert!(program(&ifs, SNAP).len() < 4096);
    }
}

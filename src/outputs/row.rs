//! A row: the CSV schema v3 (a contract, see docs/architecture.md): v1's
//! 21 columns, then v2's `pid,comm,cgroup`, then v3's `drop_reason`, so
//! readers of older versions that read by name keep working. JSON lines
//! carry the same fields under the same names.
//!
//! Rows are the hot path of a flood: a row borrows what it shows (no
//! `String` per field) and each format writes its cells straight into the
//! output's buffer (`cells::Lines`), in straight-line calls (no serde:
//! through it, CSV took a third of the aggregator thread's time).

use std::borrow::Cow;
use std::io;
use std::net::IpAddr;

use icmpmon_core::aggregate::Attribution;
use icmpmon_core::event::{IcmpEvent, Info};

/// Column names of CSV schema v3, in order (v1: the first 21, v2: 24).
pub(crate) const HEADER: [&str; 25] = [
    "timestamp",
    "source",
    "direction",
    "ifname",
    "family",
    "src",
    "dst",
    "icmp_type",
    "icmp_code",
    "kind",
    "id",
    "seq",
    "ttl",
    "length",
    "rtt_us",
    "inner_proto",
    "inner_src",
    "inner_dst",
    "inner_sport",
    "inner_dport",
    "info",
    "pid",
    "comm",
    "cgroup",
    "drop_reason",
];

/// One exported ICMP message, borrowing from its event; `None` is an
/// empty cell.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// Wall clock, nanoseconds since the epoch (written RFC 3339).
    pub ts_ns: u64,
    /// A source's name: one of icmpmon's own words (written unquoted).
    pub source: &'static str,
    pub direction: &'static str,
    /// None when the source gives no interface (capture files).
    pub ifname: Option<&'a str>,
    pub family: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Borrowed for every known type; only an unknown one is formatted.
    pub kind: Cow<'static, str>,
    pub id: Option<u16>,
    pub seq: Option<u16>,
    pub ttl: u8,
    pub length: u32,
    pub rtt_us: Option<u64>,
    pub inner_proto: Option<u8>,
    pub inner_src: Option<IpAddr>,
    pub inner_dst: Option<IpAddr>,
    pub inner_sport: Option<u16>,
    pub inner_dport: Option<u16>,
    pub info: Option<RowInfo<'a>>,
    /// Schema v2: the local process of the flow an error quotes, or of
    /// the socket an echo request left from (live sources, when found).
    pub pid: Option<u32>,
    pub comm: Option<&'a str>,
    pub cgroup: Option<&'a str>,
    /// Schema v3: on a `drop` row, the kernel's reason (`info` then names
    /// the function that dropped it).
    pub drop_reason: Option<&'a str>,
}

/// The `info` cell: what the message says beyond its type, or on a drop
/// row the kernel function that dropped it.
#[derive(Debug, Clone, Copy)]
pub enum RowInfo<'a> {
    Message(Info),
    Function(&'a str),
}

/// One cell as the formats see it: each writes every kind its own way.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    Empty,
    /// Text that may need quoting or escaping.
    Text(&'a str),
    Uint(u64),
    Ip(IpAddr),
    /// Nanoseconds since the epoch, written RFC 3339.
    Time(u64),
    /// ASCII without quotes, commas or escapes.
    Info(Info),
    /// icmpmon's own words (source, direction, kind): ASCII letters,
    /// digits and dashes, written as they are.
    Word(&'a str),
}

impl<'a> Row<'a> {
    /// `rtt_us`: the aggregator's answer for an echo reply it paired.
    pub fn new(
        ev: &'a IcmpEvent,
        source: &'static str,
        ifname: Option<&'a str>,
        rtt_us: Option<u64>,
        who: Option<&'a Attribution>,
    ) -> Self {
        let q = ev.quoted.as_ref();
        let owner = match who {
            Some(Attribution::Owner(o)) => Some(&**o),
            _ => None,
        };
        Self {
            ts_ns: ev.ts_ns,
            source,
            direction: ev.direction.as_str(),
            ifname,
            family: ev.family.number(),
            src: ev.src,
            dst: ev.dst,
            icmp_type: ev.icmp_type,
            icmp_code: ev.icmp_code,
            kind: ev.kind(),
            id: ev.echo.map(|e| e.id),
            seq: ev.echo.map(|e| e.seq),
            ttl: ev.ttl,
            length: ev.length,
            rtt_us,
            inner_proto: q.map(|q| q.proto),
            inner_src: q.map(|q| q.src),
            inner_dst: q.map(|q| q.dst),
            inner_sport: q.and_then(|q| q.sport),
            inner_dport: q.and_then(|q| q.dport),
            info: match &ev.drop {
                Some(d) => Some(RowInfo::Function(&d.function)),
                None => ev.info.map(RowInfo::Message),
            },
            pid: owner.map(|o| o.pid),
            comm: owner.map(|o| o.comm.as_str()),
            cgroup: owner.map(|o| o.cgroup.as_str()),
            drop_reason: ev.drop.as_ref().map(|d| &*d.reason),
        }
    }

    /// Hands `format` the cells in `HEADER`'s order, each under its name:
    /// straight-line calls, so that each format's code for each cell is
    /// inlined here (an array of cells matched in a loop was a fifth of the
    /// writer thread's time).
    #[inline(always)]
    pub(crate) fn write_cells(&self, format: &mut impl CellFormat) {
        fn uint<T: Into<u64>>(v: Option<T>) -> Cell<'static> {
            v.map_or(Cell::Empty, |v| Cell::Uint(v.into()))
        }
        fn text(v: Option<&str>) -> Cell<'_> {
            v.map_or(Cell::Empty, Cell::Text)
        }
        fn ip(v: Option<IpAddr>) -> Cell<'static> {
            v.map_or(Cell::Empty, Cell::Ip)
        }
        let f = format;
        f.cell("timestamp", Cell::Time(self.ts_ns));
        f.cell("source", Cell::Word(self.source));
        f.cell("direction", Cell::Word(self.direction));
        f.cell("ifname", text(self.ifname));
        f.cell("family", Cell::Uint(self.family.into()));
        f.cell("src", Cell::Ip(self.src));
        f.cell("dst", Cell::Ip(self.dst));
        f.cell("icmp_type", Cell::Uint(self.icmp_type.into()));
        f.cell("icmp_code", Cell::Uint(self.icmp_code.into()));
        f.cell("kind", Cell::Word(&self.kind));
        f.cell("id", uint(self.id));
        f.cell("seq", uint(self.seq));
        f.cell("ttl", Cell::Uint(self.ttl.into()));
        f.cell("length", Cell::Uint(self.length.into()));
        f.cell("rtt_us", uint(self.rtt_us));
        f.cell("inner_proto", uint(self.inner_proto));
        f.cell("inner_src", ip(self.inner_src));
        f.cell("inner_dst", ip(self.inner_dst));
        f.cell("inner_sport", uint(self.inner_sport));
        f.cell("inner_dport", uint(self.inner_dport));
        let info = match self.info {
            Some(RowInfo::Message(i)) => Cell::Info(i),
            Some(RowInfo::Function(f)) => Cell::Text(f),
            None => Cell::Empty,
        };
        f.cell("info", info);
        f.cell("pid", uint(self.pid));
        f.cell("comm", text(self.comm));
        f.cell("cgroup", text(self.cgroup));
        f.cell("drop_reason", text(self.drop_reason));
    }
}

/// A row format (CSV, JSON lines): writes each cell it is handed, in
/// `HEADER`'s order.
pub(crate) trait CellFormat {
    fn cell(&mut self, name: &'static str, cell: Cell<'_>);
}

/// A headless output: one row per ICMP message.
pub trait RowSink: Send {
    fn write_row(&mut self, row: &Row) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// The end of a run that went well.
    fn finish(&mut self) -> io::Result<()> {
        self.flush()
    }
}

/// Interface names by index, asked of the kernel once each; found once
/// per row through foldhash (seeded per process), cheaper than SipHash.
#[derive(Debug, Default)]
pub struct IfNames(foldhash::HashMap<u32, String>);

/// The socket interface names are asked on (SIOCGIFNAME), in the network
/// namespace icmpmon runs in: one per process, made before the sandbox,
/// which allows no new socket (the C library's if_indextoname makes one
/// per call). AF_UNIX: every unit allows it.
static NAME_SOCKET: std::sync::OnceLock<Option<std::os::fd::OwnedFd>> = std::sync::OnceLock::new();

/// Makes the socket interface names are asked on, if not yet made.
pub(crate) fn open_name_socket() {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    NAME_SOCKET.get_or_init(|| {
        rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .ok()
    });
}

impl IfNames {
    /// None for index 0 (no interface known).
    pub fn get(&mut self, ifindex: u32) -> Option<&str> {
        if ifindex == 0 {
            return None;
        }
        let name = self.0.entry(ifindex).or_insert_with(|| {
            open_name_socket();
            NAME_SOCKET
                .get()
                .and_then(Option::as_ref)
                .and_then(|s| rustix::net::netdevice::index_to_name(s, ifindex).ok())
                // Gone (or in another namespace): keep the number.
                .unwrap_or_else(|| format!("if{ifindex}"))
        });
        Some(name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use icmpmon_core::event::{Direction, Echo, Family, Info, Quoted};

    /// A frag-needed error quoting a UDP flow.
    pub(crate) fn error_event() -> IcmpEvent {
        IcmpEvent {
            drop: None,
            mono_ns: None,
            ts_ns: 1_000_000_001,
            direction: Direction::Out,
            ifindex: 0,
            family: Family::V4,
            src: IpAddr::from([127, 0, 0, 1]),
            dst: IpAddr::from([127, 0, 0, 1]),
            ttl: 64,
            length: 84,
            icmp_type: 3,
            icmp_code: 4,
            echo: None,
            quoted: Some(Quoted {
                proto: 17,
                src: IpAddr::from([10, 0, 0, 1]),
                dst: IpAddr::from([10, 0, 0, 2]),
                sport: Some(5000),
                dport: Some(53),
                echo_id: None,
            }),
            info: Some(Info::Mtu(1400)),
        }
    }

    pub(crate) fn echo_event() -> IcmpEvent {
        IcmpEvent {
            mono_ns: None,
            icmp_type: 8,
            icmp_code: 0,
            quoted: None,
            info: None,
            echo: Some(Echo {
                id: 7,
                seq: 1,
                payload_len: 56,
                payload_digest: 0,
            }),
            ..error_event()
        }
    }

    /// What a property test builds a row from: an event, its owner, its
    /// interface name and round trip, with any text in every string.
    #[derive(Debug, Clone)]
    pub(crate) struct RowParts {
        ev: IcmpEvent,
        owner: Option<(u32, String, String)>,
        ifname: Option<String>,
        rtt_us: Option<u64>,
    }

    impl RowParts {
        pub(crate) fn build(
            &self,
        ) -> (IcmpEvent, Option<Attribution>, Option<String>, Option<u64>) {
            let who = self.owner.clone().map(|(pid, comm, cgroup)| {
                Attribution::Owner(std::sync::Arc::new(icmpmon_core::aggregate::Owner {
                    pid,
                    comm,
                    uid: 0,
                    cgroup,
                }))
            });
            (self.ev.clone(), who, self.ifname.clone(), self.rtt_us)
        }
    }

    pub(crate) fn arb_row_parts() -> impl proptest::strategy::Strategy<Value = RowParts> {
        use icmpmon_core::event::KernelDrop;
        use proptest::prelude::*;
        let ip = prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ];
        // Any printable text, or the characters either format escapes
        // (backslash and NUL included).
        let text = "\\PC*|[,\"\\\\\n\r\t a-z\u{0}-\u{1f}]{0,12}";
        let info = prop_oneof![
            any::<u32>().prop_map(Info::Mtu),
            ip.clone().prop_map(Info::Gateway),
            ip.clone().prop_map(Info::Target),
            any::<u32>().prop_map(Info::Pointer),
        ];
        let quoted = (
            any::<u8>(),
            ip.clone(),
            ip.clone(),
            any::<Option<u16>>(),
            any::<Option<u16>>(),
        )
            .prop_map(|(proto, src, dst, sport, dport)| Quoted {
                proto,
                src,
                dst,
                sport,
                dport,
                echo_id: None,
            });
        let echo = (any::<u16>(), any::<u16>()).prop_map(|(id, seq)| Echo {
            id,
            seq,
            payload_len: 0,
            payload_digest: 0,
        });
        (
            (
                any::<u64>(),
                any::<bool>(),
                ip.clone(),
                ip,
                any::<u8>(),
                any::<u32>(),
                any::<u8>(),
                any::<u8>(),
            ),
            (
                proptest::option::of(echo),
                proptest::option::of(quoted),
                proptest::option::of(info),
            ),
            proptest::option::of((text, text)),
            proptest::option::of((any::<u32>(), text, text)),
            proptest::option::of(text),
            any::<Option<u64>>(),
        )
            .prop_map(
                |(head, (echo, quoted, info), drop, owner, ifname, rtt_us)| {
                    let (ts_ns, v6, src, dst, ttl, length, icmp_type, icmp_code) = head;
                    let direction = if drop.is_some() {
                        Direction::Drop
                    } else {
                        Direction::In
                    };
                    RowParts {
                        ev: IcmpEvent {
                            ts_ns,
                            mono_ns: None,
                            direction,
                            ifindex: 0,
                            family: if v6 { Family::V6 } else { Family::V4 },
                            src,
                            dst,
                            ttl,
                            length,
                            icmp_type,
                            icmp_code,
                            echo,
                            quoted,
                            info,
                            drop: drop.map(|(r, f): (String, String)| KernelDrop {
                                reason: r.into(),
                                function: f.into(),
                            }),
                        },
                        owner,
                        ifname,
                        rtt_us,
                    }
                },
            )
    }

    /// A row's cells as text, by other means than the writers' (std's
    /// Display, the `time` crate), to check them against.
    pub(crate) fn expected_cells(row: &Row) -> Vec<String> {
        fn s<T: ToString>(v: Option<T>) -> String {
            v.map_or_else(String::new, |v| v.to_string())
        }
        let secs = (row.ts_ns / 1_000_000_000) as i64;
        let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let timestamp = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            row.ts_ns % 1_000_000_000
        );
        vec![
            timestamp,
            row.source.to_string(),
            row.direction.to_string(),
            s(row.ifname),
            row.family.to_string(),
            row.src.to_string(),
            row.dst.to_string(),
            row.icmp_type.to_string(),
            row.icmp_code.to_string(),
            row.kind.to_string(),
            s(row.id),
            s(row.seq),
            row.ttl.to_string(),
            row.length.to_string(),
            s(row.rtt_us),
            s(row.inner_proto),
            s(row.inner_src),
            s(row.inner_dst),
            s(row.inner_sport),
            s(row.inner_dport),
            match row.info {
                Some(RowInfo::Message(i)) => i.to_string(),
                Some(RowInfo::Function(f)) => f.to_string(),
                None => String::new(),
            },
            s(row.pid),
            s(row.comm),
            s(row.cgroup),
            s(row.drop_reason),
        ]
    }

    /// The names each format is handed are the header's, in its order.
    #[test]
    fn cells_come_in_header_order() {
        struct Names(Vec<&'static str>);
        impl CellFormat for Names {
            fn cell(&mut self, name: &'static str, _: Cell<'_>) {
                self.0.push(name);
            }
        }
        let ev = error_event();
        let row = Row::new(&ev, "test", None, None, None);
        let mut names = Names(Vec::new());
        row.write_cells(&mut names);
        assert_eq!(names.0, HEADER);
    }

    #[test]
    fn loopback_index_has_a_name() {
        let mut names = IfNames::default();
        assert_eq!(names.get(0), None);
        assert_eq!(names.get(1), Some("lo"));
    }
}

//! A row: the CSV schema v3 (a contract, see docs/architecture.md): v1's
//! 21 columns, then v2's `pid,comm,cgroup`, then v3's `drop_reason`, so
//! readers of older versions that read by name keep working. JSON lines
//! carry the same fields under the same names.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use serde::Serialize;

use icmpmon_core::aggregate::Attribution;
use icmpmon_core::event::IcmpEvent;

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

/// One exported ICMP message; `None` is an empty cell.
#[derive(Debug, Clone, Serialize)]
pub struct Row<'a> {
    pub timestamp: String,
    pub source: &'a str,
    pub direction: &'static str,
    /// None when the source gives no interface (capture files).
    pub ifname: Option<&'a str>,
    pub family: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub icmp_type: u8,
    pub icmp_code: u8,
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
    pub info: Option<String>,
    /// Schema v2: the local process of the flow an error quotes, or of
    /// the socket an echo request left from (live sources, when found).
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cgroup: Option<String>,
    /// Schema v3: on a `drop` row, the kernel's reason (`info` then names
    /// the function that dropped it).
    pub drop_reason: Option<&'a str>,
}

impl<'a> Row<'a> {
    /// `rtt_us`: the aggregator's answer for an echo reply it paired.
    pub fn new(
        ev: &'a IcmpEvent,
        source: &'a str,
        ifname: Option<&'a str>,
        rtt_us: Option<u64>,
        who: Option<&Attribution>,
    ) -> Self {
        let q = ev.quoted.as_ref();
        let owner = match who {
            Some(Attribution::Owner(o)) => Some(o),
            _ => None,
        };
        Self {
            timestamp: rfc3339_nanos(ev.ts_ns),
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
                Some(d) => Some(d.function.to_string()),
                None => ev.info.map(|i| i.to_string()),
            },
            pid: owner.map(|o| o.pid),
            comm: owner.map(|o| o.comm.clone()),
            cgroup: owner.map(|o| o.cgroup.clone()),
            drop_reason: ev.drop.as_ref().map(|d| &*d.reason),
        }
    }
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

/// RFC 3339 UTC with nanoseconds, e.g. `2026-11-23T08:28:00.000000001Z`.
/// The date and time of day are formatted once per second (a thread-local
/// cache): rows of one second differ in their nanoseconds only.
pub fn rfc3339_nanos(ts_ns: u64) -> String {
    use std::cell::RefCell;
    use std::fmt::Write as _;
    thread_local! {
        static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let secs = (ts_ns / 1_000_000_000) as i64;
    let nanos = ts_ns % 1_000_000_000;
    LAST.with_borrow_mut(|(last, prefix)| {
        if *last != secs {
            prefix.clear();
            if let Ok(t) = time::OffsetDateTime::from_unix_timestamp(secs) {
                let _ = write!(
                    prefix,
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                );
            }
            *last = secs;
        }
        if prefix.is_empty() {
            return String::new();
        }
        let mut out = String::with_capacity(prefix.len() + 10);
        out.push_str(prefix);
        let _ = write!(out, "{nanos:09}Z");
        out
    })
}

/// Interface names by index, looked up once each.
#[derive(Debug, Default)]
pub struct IfNames(HashMap<u32, String>);

impl IfNames {
    /// None for index 0 (no interface known).
    pub fn get(&mut self, ifindex: u32) -> Option<&str> {
        if ifindex == 0 {
            return None;
        }
        let name = self.0.entry(ifindex).or_insert_with(|| {
            nix::net::if_::if_indextoname(ifindex).map_or_else(
                // Gone (or in another namespace): keep the number.
                |_| format!("if{ifindex}"),
                |n| n.to_string_lossy().into_owned(),
            )
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

    #[test]
    fn timestamps_have_nine_fraction_digits() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_795_000_000_123_456_789),
            "2026-11-18T11:06:40.123456789Z"
        );
    }

    #[test]
    fn loopback_index_has_a_name() {
        let mut names = IfNames::default();
        assert_eq!(names.get(0), None);
        assert_eq!(names.get(1), Some("lo"));
    }
}

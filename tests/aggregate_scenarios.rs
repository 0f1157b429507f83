//! Scenario fixtures for the aggregator: each file under
//! tests/fixtures/aggregate/ is a sequence of events (data, not code), the
//! `rtt_us` expected for some of them, and the parts of the final snapshot
//! that must hold. A fixture states only what it is about; `expect` is
//! matched as a subset (objects: the keys given; arrays: same length,
//! element by element).

use std::net::IpAddr;
use std::path::Path;

use icmpmon_core::aggregate::Thresholds;
use icmpmon_core::aggregate::{Aggregator, Config};
use icmpmon_core::event::{Direction, Echo, Family, IcmpEvent, Info, Quoted};
use icmpmon_core::parse::digest;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FixtureConfig {
    echo_timeout_ms: Option<u64>,
    max_peers: Option<usize>,
    max_pending: Option<usize>,
    flood_pps: Option<u64>,
    unreachable_pps: Option<u64>,
    oversize_bytes: Option<u32>,
    ttl_exceeded_pps: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotedSpec {
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    sport: Option<u16>,
    dport: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSpec {
    /// Microseconds from the start of the scenario.
    t_us: u64,
    #[serde(default)]
    dir: Option<String>,
    src: IpAddr,
    dst: IpAddr,
    #[serde(rename = "type")]
    icmp_type: u8,
    #[serde(default)]
    code: u8,
    #[serde(default)]
    id: Option<u16>,
    #[serde(default)]
    seq: Option<u16>,
    /// Echo data (its digest and length are what the parser would give).
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    quoted: Option<QuotedSpec>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    gateway: Option<IpAddr>,
    /// Expected `rtt_us` of this event's row (`null`: none).
    #[serde(default, deserialize_with = "some_value")]
    rtt_us: Option<Value>,
}

fn some_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    #[allow(dead_code)]
    about: String,
    #[serde(default)]
    config: FixtureConfig,
    events: Vec<EventSpec>,
    /// Move the clock to this many ms after the start before the snapshot.
    #[serde(default)]
    tick_ms: Option<u64>,
    expect: Value,
}

const T0: u64 = 1_700_000_000_000_000_000;

fn event(e: &EventSpec) -> IcmpEvent {
    let family = if e.src.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let data = e.data.as_deref().unwrap_or("").as_bytes();
    IcmpEvent {
        drop: None,
        mono_ns: None,
        ts_ns: T0 + e.t_us * 1000,
        direction: match e.dir.as_deref() {
            Some("in") => Direction::In,
            Some("out") => Direction::Out,
            None | Some("-") => Direction::Unknown,
            Some(d) => panic!("dir {d}"),
        },
        ifindex: 1,
        family,
        src: e.src,
        dst: e.dst,
        ttl: 64,
        length: 28 + data.len() as u32,
        icmp_type: e.icmp_type,
        icmp_code: e.code,
        echo: e.id.map(|id| Echo {
            id,
            seq: e.seq.unwrap_or(0),
            payload_len: data.len() as u32,
            payload_digest: digest(data),
        }),
        quoted: e.quoted.as_ref().map(|q| Quoted {
            proto: q.proto,
            src: q.src,
            dst: q.dst,
            sport: q.sport,
            dport: q.dport,
            echo_id: None,
        }),
        info: e.mtu.map(Info::Mtu).or(e.gateway.map(Info::Gateway)),
    }
}

fn config(c: &FixtureConfig) -> Config {
    let d = Config::default();
    let t = Thresholds::default();
    Config {
        echo_timeout_ns: c
            .echo_timeout_ms
            .map_or(d.echo_timeout_ns, |ms| ms * 1_000_000),
        max_peers: c.max_peers.unwrap_or(d.max_peers),
        max_pending: c.max_pending.unwrap_or(d.max_pending),
        thresholds: Thresholds {
            echo_flood_pps: c.flood_pps.unwrap_or(t.echo_flood_pps),
            unreachable_pps: c.unreachable_pps.unwrap_or(t.unreachable_pps),
            oversize_bytes: c.oversize_bytes.unwrap_or(t.oversize_bytes),
            ttl_exceeded_pps: c.ttl_exceeded_pps.unwrap_or(t.ttl_exceeded_pps),
        },
        ..d
    }
}

/// Where `got` fails to contain `want`, as a JSON path.
fn mismatch(want: &Value, got: &Value, path: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().find_map(|(k, wv)| match g.get(k) {
            Some(gv) => mismatch(wv, gv, &format!("{path}.{k}")),
            None => Some(format!("{path}.{k}: missing")),
        }),
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (wv, gv))| mismatch(wv, gv, &format!("{path}[{i}]"))),
        (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => None,
        _ if want == got => None,
        _ => Some(format!("{path}: want {want}, got {got}")),
    }
}

fn run(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let fx: Fixture = serde_json::from_str(&text).map_err(|e| format!("bad fixture: {e}"))?;
    let mut agg = Aggregator::new(config(&fx.config));
    for (i, spec) in fx.events.iter().enumerate() {
        let out = agg.ingest(&event(spec));
        if let Some(want) = &spec.rtt_us {
            let got = serde_json::to_value(out.rtt_us).unwrap();
            if *want != got {
                return Err(format!("event {i}: rtt_us want {want}, got {got}"));
            }
        }
    }
    if let Some(ms) = fx.tick_ms {
        agg.tick(T0 + ms * 1_000_000);
    }
    let snap = serde_json::to_value(agg.snapshot()).unwrap();
    match mismatch(&fx.expect, &snap, "snapshot") {
        None => Ok(()),
        Some(m) => Err(format!("{m}\nsnapshot: {snap:#}")),
    }
}

#[test]
fn aggregate_scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aggregate");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "fixtures missing in {}", dir.display());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| run(f).err().map(|e| format!("{}: {e}", f.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

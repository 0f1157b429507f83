//! Anomaly flags: signs that ICMP is being abused or that something on the
//! path is odd. Detection is per second of event time with bounded state
//! (space-saving for per-source counts), so a spoofed flood cannot grow it.
//! A flag is raised once (one alert) and stays active while it keeps
//! triggering; after `QUIET` without a trigger it may be raised again.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::num::NonZeroUsize;

use foldhash::fast::RandomState;
use lru::LruCache;
use serde::Serialize;

use super::addr::Addr;
use super::topk::SpaceSaving;

/// After this long without a trigger, a flag counts as over.
pub const QUIET_NS: u64 = 30_000_000_000;
const MAX_FLAGS: usize = 256;
/// Sources tracked per second for floods / traceroutes.
const TRACKED: usize = 64;
/// New alerts per second of event time; more are counted, not written
/// (a spoofed flood would otherwise write one alert per source).
const ALERTS_PER_SECOND: u64 = 100;

/// What a flag is about, as flags are found: its text is written only
/// when the flag is raised anew, not for each trigger of an active one
/// (an oversized echo flood from one source formats nothing per packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Subject {
    Host(IpAddr),
    /// Requester → responder.
    Pair(IpAddr, IpAddr),
    Named(&'static str),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Host(a) => write!(f, "{a}"),
            Subject::Pair(a, b) => write!(f, "{a} → {b}"),
            Subject::Named(s) => f.write_str(s),
        }
    }
}

/// Whether a per-second count has just gone past `threshold` (is one
/// more): each flag is raised once per subject and second. No overflow,
/// whatever the threshold.
fn just_crossed(count: u64, threshold: u64) -> bool {
    count.checked_sub(1) == Some(threshold)
}

/// Thresholds (`--flood-pps` etc.).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Echo requests per second from one source.
    pub echo_flood_pps: u64,
    /// Destination-unreachable messages per second, all reporters.
    pub unreachable_pps: u64,
    /// Echo data bytes above which a request is oversized.
    pub oversize_bytes: u32,
    /// Time-exceeded messages per second about one prober.
    pub ttl_exceeded_pps: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            echo_flood_pps: 500,
            unreachable_pps: 100,
            oversize_bytes: 1472,
            ttl_exceeded_pps: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlagKind {
    EchoFlood,
    Redirect,
    UnreachableStorm,
    OversizedEcho,
    PayloadMismatch,
    TracerouteSeen,
    /// Echo requests to this host unanswered while its ICMP rate limiter
    /// dropped messages.
    LocalRateLimit,
    /// Echo requests to this host unanswered with icmp_echo_ignore_all set.
    EchoIgnored,
}

impl FlagKind {
    pub const ALL: [FlagKind; 8] = [
        FlagKind::EchoFlood,
        FlagKind::Redirect,
        FlagKind::UnreachableStorm,
        FlagKind::OversizedEcho,
        FlagKind::PayloadMismatch,
        FlagKind::TracerouteSeen,
        FlagKind::LocalRateLimit,
        FlagKind::EchoIgnored,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FlagKind::EchoFlood => "echo-flood",
            FlagKind::Redirect => "redirect",
            FlagKind::UnreachableStorm => "unreachable-storm",
            FlagKind::OversizedEcho => "oversized-echo",
            FlagKind::PayloadMismatch => "payload-mismatch",
            FlagKind::TracerouteSeen => "traceroute-seen",
            FlagKind::LocalRateLimit => "local-rate-limit",
            FlagKind::EchoIgnored => "echo-ignored",
        }
    }
}

/// When something happened: wall-clock time (`ts_ns`) for what is shown,
/// and the aggregator's expiry clock (`at`, monotonic in a live run) for
/// how long ago, so that a step of the wall clock neither ends a flag's
/// quiet period early nor stretches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When {
    pub ts_ns: u64,
    pub at: u64,
}

impl When {
    pub fn new(ts_ns: u64, at: u64) -> Self {
        Self { ts_ns, at }
    }
}

/// A raised flag. `subject` says who (a source, a peer pair, "all").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    pub flag: FlagKind,
    pub subject: String,
    pub first_ns: u64,
    pub last_ns: u64,
    /// `last_ns` on the expiry clock: what the quiet period counts from.
    #[serde(skip)]
    pub last_at: u64,
    /// Times it triggered while active.
    pub count: u64,
    pub detail: String,
}

#[derive(Debug)]
pub struct Anomalies {
    pub thresholds: Thresholds,
    second: u64,
    echo_sources: SpaceSaving<Addr>,
    probers: SpaceSaving<Addr>,
    unreachables: u64,
    flags: LruCache<(FlagKind, Subject), Flag, RandomState>,
    /// Flags raised since the last `take_alerts`.
    alerts: Vec<Flag>,
    alerts_this_second: u64,
    raised: u64,
    pub alerts_suppressed: u64,
}

impl Anomalies {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            second: 0,
            echo_sources: SpaceSaving::new(TRACKED),
            probers: SpaceSaving::new(TRACKED),
            unreachables: 0,
            flags: LruCache::with_hasher(
                NonZeroUsize::new(MAX_FLAGS).expect("non-zero"),
                RandomState::default(),
            ),
            alerts: Vec::new(),
            alerts_this_second: 0,
            raised: 0,
            alerts_suppressed: 0,
        }
    }

    fn roll(&mut self, at: u64) {
        let sec = at / 1_000_000_000;
        if sec != self.second {
            self.second = sec;
            self.echo_sources.clear();
            self.probers.clear();
            self.unreachables = 0;
            self.alerts_this_second = 0;
        }
    }

    /// `detail` writes the trigger's detail (into the active flag's own
    /// text, which it replaces).
    pub(crate) fn raise(
        &mut self,
        flag: FlagKind,
        subject: Subject,
        when: When,
        detail: impl FnOnce(&mut String),
    ) {
        let key = (flag, subject);
        if let Some(f) = self.flags.get_mut(&key) {
            if when.at.saturating_sub(f.last_at) < QUIET_NS {
                f.last_ns = f.last_ns.max(when.ts_ns);
                f.last_at = f.last_at.max(when.at);
                f.count += 1;
                f.detail.clear();
                detail(&mut f.detail);
                return;
            }
        }
        let mut text = String::new();
        detail(&mut text);
        let f = Flag {
            flag,
            subject: subject.to_string(),
            first_ns: when.ts_ns,
            last_ns: when.ts_ns,
            last_at: when.at,
            count: 1,
            detail: text,
        };
        self.raised += 1;
        self.roll(when.at);
        if self.alerts_this_second < ALERTS_PER_SECOND {
            self.alerts_this_second += 1;
            self.alerts.push(f.clone());
        } else {
            self.alerts_suppressed += 1;
        }
        self.flags.put(key, f);
    }

    pub fn echo_request(&mut self, src: IpAddr, payload_len: u32, when: When) {
        self.roll(when.at);
        let c = self.echo_sources.add(Addr(src));
        let t = self.thresholds.echo_flood_pps;
        // Raise when the guaranteed count crosses the threshold: once per
        // source and second.
        if just_crossed(c.count - c.error, t) {
            self.raise(FlagKind::EchoFlood, Subject::Host(src), when, |d| {
                let _ = write!(d, "more than {t} echo requests within one second");
            });
        }
        let most = self.thresholds.oversize_bytes;
        if payload_len > most {
            self.raise(FlagKind::OversizedEcho, Subject::Host(src), when, |d| {
                let _ = write!(d, "echo request with {payload_len} data bytes (> {most})");
            });
        }
    }

    pub fn payload_mismatch(&mut self, requester: IpAddr, responder: IpAddr, when: When) {
        self.raise(
            FlagKind::PayloadMismatch,
            Subject::Pair(requester, responder),
            when,
            |d| {
                d.push_str(
                    "echo reply data differs from its request's (tunnel or rewriting middlebox?)",
                )
            },
        );
    }

    pub fn redirect(&mut self, reporter: IpAddr, gateway: Option<IpAddr>, when: When) {
        self.raise(FlagKind::Redirect, Subject::Host(reporter), when, |d| {
            let _ = match gateway {
                Some(g) => write!(d, "redirect to gateway {g}"),
                None => write!(d, "redirect to gateway ?"),
            };
        });
    }

    pub fn unreachable(&mut self, when: When) {
        self.roll(when.at);
        self.unreachables += 1;
        let t = self.thresholds.unreachable_pps;
        if just_crossed(self.unreachables, t) {
            self.raise(
                FlagKind::UnreachableStorm,
                Subject::Named("all"),
                when,
                |d| {
                    let _ = write!(
                        d,
                        "more than {t} destination-unreachable messages within one second"
                    );
                },
            );
        }
    }

    /// A time-exceeded message about a packet sent by `prober`.
    pub fn ttl_exceeded(&mut self, prober: IpAddr, when: When) {
        self.roll(when.at);
        let c = self.probers.add(Addr(prober));
        let t = self.thresholds.ttl_exceeded_pps;
        if just_crossed(c.count - c.error, t) {
            self.raise(FlagKind::TracerouteSeen, Subject::Host(prober), when, |d| {
                let _ = write!(d, "more than {t} time-exceeded replies within one second");
            });
        }
    }

    pub fn take_alerts(&mut self) -> Vec<Flag> {
        std::mem::take(&mut self.alerts)
    }

    /// Every flag still remembered, newest last.
    pub fn flags(&self) -> Vec<Flag> {
        let mut v: Vec<Flag> = self.flags.iter().map(|(_, f)| f.clone()).collect();
        v.sort_by_key(|f| (f.last_ns, f.flag));
        v
    }

    /// Flags raised in total (including forgotten ones).
    pub fn raised(&self) -> u64 {
        self.raised
    }
}

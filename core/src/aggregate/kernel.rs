//! Why no reply: the kernel's own ICMP counters and the sysctls that
//! silence ICMP, sampled once a second by the binary (this module parses
//! and judges, it reads no file). Echo requests this host received but did
//! not answer, while a rate-limit counter moved or a sysctl says "ignore",
//! raise `local-rate-limit` / `echo-ignored`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::anomaly::FlagKind;

/// The counters kept, as `Group.Name` of /proc/net/snmp, /proc/net/netstat
/// (`Group: names` / `Group: values` line pairs) and /proc/net/snmp6
/// (`Name value` lines, group `Icmp6`).
pub const COUNTERS: [&str; 16] = [
    "Icmp.InMsgs",
    "Icmp.InErrors",
    "Icmp.InCsumErrors",
    "Icmp.InEchos",
    "Icmp.OutEchoReps",
    "Icmp.OutErrors",
    "Icmp.OutRateLimitGlobal",
    "Icmp.OutRateLimitHost",
    "Icmp6.Icmp6InMsgs",
    "Icmp6.Icmp6InErrors",
    "Icmp6.Icmp6InCsumErrors",
    "Icmp6.Icmp6InEchos",
    "Icmp6.Icmp6OutEchoReplies",
    "Icmp6.Icmp6OutErrors",
    "Icmp6.Icmp6OutRateLimitHost",
    "TcpExt.IPReversePathFilter",
];

/// The sysctls kept (under /proc/sys, dots for slashes).
pub const SYSCTLS: [&str; 11] = [
    "net.ipv4.icmp_echo_ignore_all",
    "net.ipv4.icmp_echo_ignore_broadcasts",
    "net.ipv4.icmp_ratelimit",
    "net.ipv4.icmp_ratemask",
    "net.ipv4.icmp_msgs_per_sec",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.rp_filter",
    "net.ipv6.icmp.echo_ignore_all",
    "net.ipv6.icmp.ratelimit",
    "net.ipv6.icmp.ratemask",
    "net.ipv6.icmp.echo_ignore_multicast",
];

/// One reading. A counter or sysctl this kernel lacks is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelSample {
    pub ts_ns: u64,
    pub counters: BTreeMap<&'static str, u64>,
    pub sysctls: BTreeMap<&'static str, String>,
}

impl KernelSample {
    /// Adds the kept counters of a /proc/net/snmp or /proc/net/netstat text.
    pub fn add_pairs(&mut self, text: &str) {
        let mut lines = text.lines();
        while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
            let (Some((group, names)), Some((_, values))) =
                (names.split_once(':'), values.split_once(':'))
            else {
                continue;
            };
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                self.keep(group, n, v);
            }
        }
    }

    /// Adds the kept counters of a /proc/net/snmp6 text.
    pub fn add_snmp6(&mut self, text: &str) {
        for line in text.lines() {
            if let Some((n, v)) = line.split_once(char::is_whitespace) {
                self.keep("Icmp6", n, v.trim());
            }
        }
    }

    fn keep(&mut self, group: &str, name: &str, value: &str) {
        let (Some(key), Ok(v)) = (
            COUNTERS
                .iter()
                .find(|k| k.split_once('.') == Some((group, name))),
            value.parse(),
        ) else {
            return;
        };
        self.counters.insert(key, v);
    }

    pub fn set_sysctl(&mut self, name: &'static str, value: &str) {
        self.sysctls.insert(name, value.trim().to_string());
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    fn on(&self, sysctl: &str) -> bool {
        self.sysctls
            .get(sysctl)
            .is_some_and(|v| silences(sysctl, v))
    }

    /// Whether the rate limiter may hold echo replies back: type 0 in
    /// `icmp_ratemask` (a bit mask), type 129 in `net.ipv6.icmp.ratemask`
    /// (a list of ranges). By default neither is: then a moving rate-limit
    /// counter is about other messages (errors to a scan) and explains no
    /// unanswered request. Unknown (not read): assumed so.
    fn limits_echo_replies(&self, v6: bool) -> bool {
        if v6 {
            self.sysctls
                .get("net.ipv6.icmp.ratemask")
                .is_none_or(|list| in_ranges(list, 129))
        } else {
            self.sysctls
                .get("net.ipv4.icmp_ratemask")
                .and_then(|m| m.parse::<u32>().ok())
                .is_none_or(|m| m & 1 != 0)
        }
    }
}

/// Whether a sysctl's value silences ICMP: echo requests ignored, or strict
/// reverse-path filtering. The one rule for the judgement here and for what
/// the dashboard's header warns of.
pub fn silences(name: &str, value: &str) -> bool {
    match name {
        "net.ipv4.icmp_echo_ignore_all" | "net.ipv6.icmp.echo_ignore_all" => value != "0",
        "net.ipv4.conf.all.rp_filter" => value == "1",
        _ => false,
    }
}

/// Whether `n` is in a kernel range list such as `0-1,3-127`.
fn in_ranges(list: &str, n: u32) -> bool {
    list.split(',').any(|r| {
        let (lo, hi) = r.trim().split_once('-').unwrap_or((r.trim(), r.trim()));
        matches!((lo.parse::<u32>(), hi.parse::<u32>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&n))
    })
}

/// What `KernelWatch` reads for one family between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    pub v6: bool,
    /// Echo requests icmpmon saw arrive, minus replies it saw leave.
    pub unanswered: u64,
}

/// The samples of the run: the first (for the run's deltas), the last two
/// (for the last second's).
#[derive(Debug, Default, Clone)]
pub struct KernelWatch {
    pub first: Option<KernelSample>,
    pub previous: Option<KernelSample>,
    pub last: Option<KernelSample>,
}

impl KernelWatch {
    pub fn push(&mut self, s: KernelSample) {
        if self.first.is_none() {
            self.first = Some(s.clone());
        }
        self.previous = self.last.replace(s);
    }

    /// How much a counter moved between the last two samples.
    pub fn delta(&self, name: &str) -> u64 {
        match (&self.previous, &self.last) {
            (Some(p), Some(l)) => l.counter(name).saturating_sub(p.counter(name)),
            _ => 0,
        }
    }

    /// Why requests went unanswered in the last interval, if the kernel's
    /// counters or sysctls say.
    pub fn why(&self, s: Silence) -> Option<(FlagKind, String)> {
        let last = self.last.as_ref()?;
        if s.unanswered == 0 {
            return None;
        }
        let (ignore, limits, sysctls): (&str, &[&str], &[&str]) = if s.v6 {
            (
                "net.ipv6.icmp.echo_ignore_all",
                &["Icmp6.Icmp6OutRateLimitHost"],
                &["net.ipv6.icmp.ratelimit", "net.ipv6.icmp.ratemask"],
            )
        } else {
            (
                "net.ipv4.icmp_echo_ignore_all",
                &["Icmp.OutRateLimitHost", "Icmp.OutRateLimitGlobal"],
                &[
                    "net.ipv4.icmp_ratelimit",
                    "net.ipv4.icmp_ratemask",
                    "net.ipv4.icmp_msgs_per_sec",
                ],
            )
        };
        if last.on(ignore) {
            let value = last.sysctls.get(ignore).map_or("?", String::as_str);
            return Some((
                FlagKind::EchoIgnored,
                format!(
                    "{} echo requests unanswered: {ignore} = {value}",
                    s.unanswered
                ),
            ));
        }
        if !last.limits_echo_replies(s.v6) {
            return None;
        }
        let moved: Vec<String> = limits
            .iter()
            .filter_map(|c| {
                let d = self.delta(c);
                (d > 0).then(|| format!("{} +{d}", c.split_once('.').map_or(*c, |x| x.1)))
            })
            .collect();
        if moved.is_empty() {
            return None;
        }
        let settings: Vec<String> = sysctls
            .iter()
            .filter_map(|k| last.sysctls.get(k).map(|v| format!("{k} = {v}")))
            .collect();
        Some((
            FlagKind::LocalRateLimit,
            format!(
                "{} echo requests unanswered while the kernel rate-limited ICMP ({}; {})",
                s.unanswered,
                moved.join(", "),
                settings.join(", ")
            ),
        ))
    }

    /// The view: every counter with its value and its growth over the run
    /// and over the last interval, and the sysctls.
    pub fn view(&self) -> Option<KernelView> {
        let last = self.last.as_ref()?;
        let first = self.first.as_ref().unwrap_or(last);
        Some(KernelView {
            counters: last
                .counters
                .iter()
                .map(|(k, v)| KernelCounter {
                    name: k,
                    value: *v,
                    run: v.saturating_sub(first.counter(k)),
                    last: self.delta(k),
                })
                .collect(),
            sysctls: last.sysctls.iter().map(|(k, v)| (*k, v.clone())).collect(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelCounter {
    pub name: &'static str,
    pub value: u64,
    /// Growth since the run's first sample.
    pub run: u64,
    /// Growth over the last interval (about a second).
    pub last: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelView {
    pub counters: Vec<KernelCounter>,
    pub sysctls: Vec<(&'static str, String)>,
}

impl KernelView {
    /// The sysctls whose value silences ICMP (`silences`).
    pub fn silencing(&self) -> impl Iterator<Item = &(&'static str, String)> {
        self.sysctls.iter().filter(|(n, v)| silences(n, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
        Icmp: InMsgs InErrors InCsumErrors InEchos OutEchoReps OutRateLimitGlobal OutRateLimitHost\n\
        Icmp: 10 1 0 7 3 0 4\n";
    const SNMP6: &str =
        "Ip6InReceives 5\nIcmp6InEchos 2\nIcmp6OutEchoReplies 2\nIcmp6OutRateLimitHost 0\n";

    fn sample(limit_host: u64, ignore: &str) -> KernelSample {
        let mut s = KernelSample::default();
        s.add_pairs(&SNMP.replace(" 0 4\n", &format!(" 0 {limit_host}\n")));
        s.add_snmp6(SNMP6);
        s.set_sysctl("net.ipv4.icmp_echo_ignore_all", ignore);
        s.set_sysctl("net.ipv4.icmp_ratelimit", "1000\n");
        s.set_sysctl("net.ipv4.icmp_ratemask", "6169");
        s
    }

    #[test]
    fn proc_texts_give_the_kept_counters() {
        let s = sample(4, "0");
        assert_eq!(s.counters.get("Icmp.InEchos"), Some(&7));
        assert_eq!(s.counters.get("Icmp.OutRateLimitHost"), Some(&4));
        assert_eq!(s.counters.get("Icmp6.Icmp6InEchos"), Some(&2));
        assert!(!s.counters.contains_key("Ip.Forwarding"));
        assert_eq!(s.sysctls.get("net.ipv4.icmp_ratelimit").unwrap(), "1000");
    }

    #[test]
    fn unanswered_requests_are_explained_only_by_what_moved_or_is_set() {
        let mut w = KernelWatch::default();
        w.push(sample(4, "0"));
        w.push(sample(4, "0"));
        let v4 = Silence {
            v6: false,
            unanswered: 5,
        };
        assert_eq!(w.why(v4), None, "nothing moved");
        w.push(sample(9, "0"));
        match w.why(v4) {
            Some((FlagKind::LocalRateLimit, d)) => {
                assert!(d.contains("OutRateLimitHost +5"), "{d}");
                assert!(d.contains("net.ipv4.icmp_ratelimit = 1000"), "{d}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            w.why(Silence {
                unanswered: 0,
                ..v4
            }),
            None
        );
        assert_eq!(w.why(Silence { v6: true, ..v4 }), None);
        // The default ratemask (6168) spares echo replies: the counter
        // moved for other messages, and explains nothing.
        let mut spared = sample(14, "0");
        spared.set_sysctl("net.ipv4.icmp_ratemask", "6168");
        w.push(spared);
        assert_eq!(w.why(v4), None);
        let mut v6 = sample(14, "0");
        v6.add_snmp6("Icmp6OutRateLimitHost 3\n");
        v6.set_sysctl("net.ipv6.icmp.ratemask", "0-1,3-127");
        w.push(v6.clone());
        v6.add_snmp6("Icmp6OutRateLimitHost 9\n");
        w.push(v6.clone());
        assert_eq!(
            w.why(Silence { v6: true, ..v4 }),
            None,
            "129 not in 0-1,3-127"
        );
        v6.add_snmp6("Icmp6OutRateLimitHost 12\n");
        v6.set_sysctl("net.ipv6.icmp.ratemask", "0-1,3-127,129");
        w.push(v6);
        assert!(matches!(
            w.why(Silence { v6: true, ..v4 }),
            Some((FlagKind::LocalRateLimit, _))
        ));
        w.push(sample(9, "1"));
        assert!(matches!(w.why(v4), Some((FlagKind::EchoIgnored, _))));
        let view = w.view().unwrap();
        let c = view
            .counters
            .iter()
            .find(|c| c.name == "Icmp.OutRateLimitHost")
            .unwrap();
        assert_eq!((c.value, c.run, c.last), (9, 5, 0));
    }
}

//! What the rules send ICMP to (a queue or log groups), and the names of
//! icmpmon's tables and chains for each kind.

/// Prefixes of icmpmon's nft tables and xtables chains, per kind.
pub(super) const NFT_QUEUE: &str = "icmpmon_";
pub(super) const NFT_LOG: &str = "icmpmon_log_";
pub(super) const CHAIN_QUEUE: &str = "ICMPMON-";
pub(super) const CHAIN_LOG: &str = "ICMPMON-LOG-";
/// The chain of icmpmon before rules were named per queue.
pub(super) const OLD_CHAIN: &str = "ICMPMON";

/// Where ICMP goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// NFQUEUE queue N: every packet waits for icmpmon's verdict.
    Queue(u16),
    /// NFLOG: a copy of `in` packets to `group` (batched by the group's
    /// threshold), of `out` packets to `group + 1` (one at a time but
    /// under a flood: NFLOG stamps no time at output, so icmpmon takes the
    /// receive time, which waiting in a batch would delay; see `nflog`),
    /// each cut to `snaplen` bytes.
    Log {
        group: u16,
        snaplen: u32,
        threshold: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Queue,
    Log,
}

impl Target {
    pub(super) fn kind(self) -> Kind {
        match self {
            Target::Queue(_) => Kind::Queue,
            Target::Log { .. } => Kind::Log,
        }
    }
    pub(super) fn number(self) -> u16 {
        match self {
            Target::Queue(q) => q,
            Target::Log { group, .. } => group,
        }
    }
    /// The nft statement for packets of `hook` (after the match).
    pub(super) fn nft_statement(self, hook: Hook) -> String {
        match self {
            Target::Queue(q) => format!("queue num {q} bypass"),
            Target::Log { group, snaplen, .. } => {
                let group = match hook {
                    Hook::Prerouting => group,
                    Hook::Output => group.wrapping_add(1),
                };
                // No queue-threshold: the group's own (set when bound).
                format!("log group {group} snaplen {snaplen}")
            }
        }
    }
    /// The xtables target for packets of `hook`.
    pub(super) fn xtables_target(self, hook: Hook) -> Vec<String> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Target::Queue(q) => v(&[
                "-j",
                "NFQUEUE",
                "--queue-num",
                &q.to_string(),
                "--queue-bypass",
            ]),
            Target::Log {
                group,
                snaplen,
                threshold,
            } => {
                // The NFLOG target's threshold defaults to 1, and the
                // kernel takes the smaller of the rule's and the group's:
                // the rule allows the most, the group (which icmpmon
                // resizes for `out`) decides.
                let group = match hook {
                    Hook::Prerouting => group,
                    Hook::Output => group.wrapping_add(1),
                };
                v(&[
                    "-j",
                    "NFLOG",
                    "--nflog-group",
                    &group.to_string(),
                    "--nflog-size",
                    &snaplen.to_string(),
                    "--nflog-threshold",
                    &threshold.to_string(),
                ])
            }
        }
    }
}

impl Kind {
    pub(super) fn xtables_name(self) -> &'static str {
        match self {
            Kind::Queue => "NFQUEUE",
            Kind::Log => "NFLOG",
        }
    }
    pub(super) fn nft_table(self, n: u16) -> String {
        match self {
            Kind::Queue => format!("{NFT_QUEUE}{n}"),
            Kind::Log => format!("{NFT_LOG}{n}"),
        }
    }
    pub(super) fn chain(self, n: u16) -> String {
        match self {
            Kind::Queue => format!("{CHAIN_QUEUE}{n}"),
            Kind::Log => format!("{CHAIN_LOG}{n}"),
        }
    }
    /// The number in one of this kind's table names.
    pub(super) fn number_of_table(self, name: &str) -> Option<u16> {
        match self {
            Kind::Queue => name.strip_prefix(NFT_QUEUE)?.parse().ok(),
            Kind::Log => name.strip_prefix(NFT_LOG)?.parse().ok(),
        }
    }
    /// The number in one of this kind's (prerouting) chain names.
    pub(super) fn number_of_chain(self, name: &str) -> Option<u16> {
        match self {
            Kind::Queue => name.strip_prefix(CHAIN_QUEUE)?.parse().ok(),
            Kind::Log => name.strip_prefix(CHAIN_LOG)?.parse().ok(),
        }
    }
    /// The xtables chains of number `n`: `…-N` from prerouting (it also
    /// holds the defragmentation rule, which the `socket` match allows in
    /// prerouting only), `…-N-OUT` from output (locally made packets are not
    /// fragments yet).
    pub(super) fn xtables_chains(self, n: u16) -> [(Hook, String); 2] {
        [
            (Hook::Prerouting, self.chain(n)),
            (Hook::Output, format!("{}-OUT", self.chain(n))),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    /// `in`, forwarded packets included.
    Prerouting,
    /// `out`: sent by this host.
    Output,
}

impl Hook {
    pub(super) fn xtables_chain(self) -> &'static str {
        match self {
            Hook::Prerouting => "PREROUTING",
            Hook::Output => "OUTPUT",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nft,
    Xtables,
}

impl Backend {
    pub fn describe(self, target: Target) -> &'static str {
        match (self, target.kind()) {
            (Backend::Nft, Kind::Queue) => "nftables queue statement",
            (Backend::Nft, Kind::Log) => "nftables log statement",
            (Backend::Xtables, Kind::Queue) => "xtables NFQUEUE target",
            (Backend::Xtables, Kind::Log) => "xtables NFLOG target",
        }
    }
}

//! The nftables form of the rules: one `inet` table per queue or group.

use super::target::{Hook, Target};
use super::tool::run;

/// How the rules get whole packets (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Defrag {
    /// A `tproxy` rule that never runs (nft's `socket` expression, unlike
    /// xtables' match, does not enable defragmentation; `tproxy` does).
    Tproxy,
    /// A conntrack match, which brings connection tracking with it.
    Conntrack,
}

pub(super) const ICMP_MATCH: &str = "meta l4proto { icmp, ipv6-icmp }";

pub(super) fn nft_ruleset(target: Target, defrag: Defrag) -> String {
    // Priority -150 (mangle): after defragmentation (-400), as the kernel
    // module's hooks see packets. prerouting = in (and forwarded), output =
    // out. In prerouting, the `tproxy` rule after the unconditional return
    // never runs: it only makes the kernel defragment; the conntrack
    // variant matches every state instead.
    let table = target.kind().nft_table(target.number());
    let rule = |hook| {
        let ct = match defrag {
            Defrag::Conntrack if hook == Hook::Prerouting => {
                " ct state new,established,related,invalid,untracked"
            }
            _ => "",
        };
        format!("{ICMP_MATCH}{ct} counter {}", target.nft_statement(hook))
    };
    let defrag_rules = match defrag {
        Defrag::Tproxy => " return; meta l4proto tcp tproxy to :1;",
        Defrag::Conntrack => "",
    };
    format!(
        "table inet {table} {{\n\
         \tchain prerouting {{ type filter hook prerouting priority mangle; {};{defrag_rules} }}\n\
         \tchain output {{ type filter hook output priority mangle; {}; }}\n\
         }}\n",
        rule(Hook::Prerouting),
        rule(Hook::Output),
    )
}

pub(super) fn nft_table_exists(family: &str, table: &str) -> bool {
    run("nft", &["list", "table", family, table], None).is_ok()
}

/// Packets counted by a listing's rules (`nft list` "packets N").
pub(super) fn nft_packets(listing: &str) -> u64 {
    listing
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

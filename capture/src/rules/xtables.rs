//! The xtables form of the rules (iptables and ip6tables, legacy or nft):
//! chains of icmpmon's own in the mangle table.

use super::target::{Hook, Target};
use super::tool::{run, ToolError};

/// The xtables tools, the ICMP protocol name each filters on, and the nft
/// family of their tables (iptables-nft).
pub(super) const XTABLES: [(&str, &str, &str); 2] = [
    ("iptables", "icmp", "ip"),
    ("ip6tables", "ipv6-icmp", "ip6"),
];

/// Never runs (after the chain's return): asks for defragmentation alone.
pub(super) const DEFRAG_RULE: [&str; 5] = ["-m", "socket", "--transparent", "-j", "RETURN"];

pub(super) fn xtables_install(target: Target) -> Result<(), ToolError> {
    let kind = target.kind();
    for (tool, proto, _) in XTABLES {
        let base = ["-w", "-t", "mangle"];
        for (hook, chain) in kind.xtables_chains(target.number()) {
            let chain = chain.as_str();
            let to = target.xtables_target(hook);
            let to: Vec<&str> = to.iter().map(String::as_str).collect();
            run(tool, &[&base[..], &["-N", chain]].concat(), None)?;
            let plain = [&base[..], &["-A", chain, "-p", proto], &to[..]].concat();
            run(tool, &plain, None)?;
            if hook == Hook::Prerouting {
                run(
                    tool,
                    &[&base[..], &["-A", chain, "-j", "RETURN"]].concat(),
                    None,
                )?;
                let defrag = [&base[..], &["-A", chain], &DEFRAG_RULE[..]].concat();
                if let Err(e) = run(tool, &defrag, None) {
                    tracing::info!("no socket match ({e}); defragmenting through conntrack");
                    let ct = [
                        &base[..],
                        &[
                            "-R",
                            chain,
                            "1",
                            "-p",
                            proto,
                            "-m",
                            "conntrack",
                            "--ctstate",
                        ],
                        &["NEW,ESTABLISHED,RELATED,INVALID,UNTRACKED"],
                        &to[..],
                    ]
                    .concat();
                    run(tool, &ct, None)?;
                }
            }
            // Appended, and only ICMP jumps: a queue's accept ends the
            // table for the packet, so other mangle rules (marks, DSCP)
            // come first, and other traffic never enters the chain.
            let jump = [
                &base[..],
                &["-A", hook.xtables_chain(), "-p", proto, "-j", chain],
            ]
            .concat();
            run(tool, &jump, None)?;
        }
    }
    Ok(())
}

/// Packets counted by the `target` rules of `iptables -L -v -x` (first
/// column).
pub(super) fn xtables_packets(listing: &str, target: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(target))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Deletes the `mangle` tables iptables-nft created for us if they hold
/// nothing but empty base chains now.
pub(super) fn remove_empty_tables(existed: [bool; 2]) {
    for ((_, _, family), existed) in XTABLES.iter().zip(existed) {
        if existed {
            continue;
        }
        let Ok(listing) = run("nft", &["list", "table", family, "mangle"], None) else {
            continue;
        };
        // Only the base chains iptables-nft made, all empty: chains of
        // another program's (even empty ones) keep the table.
        const BASE: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
        let has_rules = listing
            .lines()
            .map(str::trim)
            .any(|l| match l.strip_prefix("chain ") {
                Some(rest) => !BASE.contains(&rest.trim_end_matches(" {").trim()),
                None => {
                    !(l.is_empty()
                        || l == "}"
                        || l.starts_with("table ")
                        || l.starts_with("type ")
                        || l.starts_with("policy "))
                }
            });
        if !has_rules {
            let _ = run("nft", &["delete", "table", family, "mangle"], None);
        }
    }
}

/// Removes the jumps from prerouting and output to `chain` in `table`, so
/// that no packet reaches it. Jumps of this version name the protocol;
/// older ones did not.
pub(super) fn unhook(tool: &str, proto: &str, table: &str, chain: &str) {
    for hook in [Hook::Prerouting, Hook::Output] {
        let hook = hook.xtables_chain();
        let with_proto = ["-w", "-t", table, "-D", hook, "-p", proto, "-j", chain];
        while run(tool, &with_proto, None).is_ok() {}
        while run(tool, &["-w", "-t", table, "-D", hook, "-j", chain], None).is_ok() {}
    }
}

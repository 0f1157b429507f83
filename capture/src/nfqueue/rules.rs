//! The firewall rules that send ICMP to icmpmon's queue: a table (nft) or a
//! chain (xtables) of icmpmon's own per queue number, so that they can be
//! found and removed whole — at the end of a run, on error, on panic, on a
//! second Ctrl-C, and at a later start after a crash.
//!
//! Ownership: rules for queue N are named for N (`table inet icmpmon_N`,
//! chain `ICMPMON-N`), and the kernel lets one socket bind a queue. An
//! instance binds its queue before it installs rules, so rules whose queue
//! nobody has bound are stale (their owner died) and rules whose queue is
//! bound belong to a running instance and are left alone.
//!
//! The rules use bypass: with nobody bound to the queue (icmpmon killed),
//! the kernel accepts the packets, so icmpmon never makes ICMP fail. They
//! count the packets they queue, which is how the packets the kernel let
//! through unqueued (fail-open on a full queue, which assigns no id and so
//! leaves no gap) are counted at the end.
//!
//! The tools run as children with the capabilities icmpmon keeps in its
//! ambient set (see `privilege`), so removal works the same for root, for
//! a service with ambient capabilities and for a binary with file
//! capabilities. A failed removal is reported, never silent.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Prefix of icmpmon's nft tables and xtables chains.
const NFT_PREFIX: &str = "icmpmon_";
const CHAIN_PREFIX: &str = "ICMPMON-";
/// The chain of icmpmon before rules were named per queue.
const OLD_CHAIN: &str = "ICMPMON";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nftables with the `queue` expression (table inet icmpmon_N).
    Nft,
    /// xtables NFQUEUE target (chain ICMPMON-N in the raw table).
    Xtables,
}

impl Backend {
    pub fn describe(self) -> &'static str {
        match self {
            Backend::Nft => "nftables queue expression",
            Backend::Xtables => "xtables NFQUEUE target",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(
        "cannot install the queue rules: the nftables queue expression failed ({nft}) \
         and so did the xtables NFQUEUE target ({xtables})"
    )]
    Install { nft: String, xtables: String },
    #[error(
        "another icmpmon captures with the xtables NFQUEUE target in this network namespace \
         (queue {0}): a packet reaches only the first NFQUEUE rule of a table, so a second \
         monitor would blind the first. Stop that one, or use the kernel module, which \
         serves any number of monitors"
    )]
    Shared(u16),
}

/// What is installed now, for every cleanup path to find.
static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);

#[derive(Debug, Clone, Copy)]
struct Installed {
    backend: Backend,
    queue: u16,
    /// Whether `table ip raw` / `table ip6 raw` existed before (iptables-nft
    /// creates them; an empty one icmpmon created is removed again).
    tables_existed: [bool; 2],
}

/// Where the firewall tools are looked for: fixed system directories, never
/// the caller's PATH, since they run with icmpmon's capabilities.
const SYSTEM_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The tool's path in a system directory (falling back to the bare name,
/// which then fails to start with a clear error).
fn tool_path(cmd: &str) -> std::path::PathBuf {
    SYSTEM_DIRS
        .iter()
        .map(|d| std::path::Path::new(d).join(cmd))
        .find(|p| p.is_file())
        .unwrap_or_else(|| cmd.into())
}

/// Runs a firewall tool: from a system directory, with an empty environment
/// (no LD_PRELOAD or PATH of the caller's reaches a child holding
/// CAP_NET_ADMIN), in a process group of its own (a second Ctrl-C at the
/// terminal must not kill it half-way through a removal).
fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(tool_path(cmd))
        .env_clear()
        .env("PATH", SYSTEM_DIRS.join(":"))
        .process_group(0)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{cmd}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("{cmd} {}: {}", args.join(" "), err.trim()))
    }
}

fn nft_table(queue: u16) -> String {
    format!("{NFT_PREFIX}{queue}")
}

fn chain(queue: u16) -> String {
    format!("{CHAIN_PREFIX}{queue}")
}

fn nft_ruleset(queue: u16) -> String {
    // Priority -150 (mangle): after defragmentation (-400), as the kernel
    // module's hooks see packets. The `ct state` match makes the kernel
    // enable conntrack, and with it defragmentation, in this namespace
    // (this kernel has no nft `queue`, so the xtables path, which asks for
    // defragmentation alone, is the one tested here). prerouting = in (and
    // forwarded), output = out.
    let table = nft_table(queue);
    let rule = format!(
        "meta l4proto {{ icmp, ipv6-icmp }} ct state new,established,related,invalid,untracked \
         counter queue num {queue} bypass"
    );
    format!(
        "table inet {table} {{\n\
         \tchain prerouting {{ type filter hook prerouting priority mangle; {rule}; }}\n\
         \tchain output {{ type filter hook output priority mangle; {rule}; }}\n\
         }}\n"
    )
}

/// The xtables tools, the ICMP protocol name each filters on, and the nft
/// family of their tables (iptables-nft).
const XTABLES: [(&str, &str, &str); 2] = [
    ("iptables", "icmp", "ip"),
    ("ip6tables", "ipv6-icmp", "ip6"),
];

/// How the xtables rules get whole packets: nf_defrag only runs in a
/// namespace once something asks for it. The `socket` match asks for
/// defragmentation alone (its rule sits after the queue rule, which every
/// packet in the chain matches, so it never runs); where it is missing the
/// conntrack match asks for it, and brings connection tracking with it.
const DEFRAG_RULE: [&str; 5] = ["-m", "socket", "--transparent", "-j", "RETURN"];

/// The chain an xtables hook jumps to: `ICMPMON-N` from prerouting (it
/// also holds the defragmentation rule, which the `socket` match allows in
/// prerouting only), `ICMPMON-N-OUT` from output (locally made packets are
/// not fragments yet).
fn xtables_chains(queue: u16) -> [(&'static str, String); 2] {
    [
        ("PREROUTING", chain(queue)),
        ("OUTPUT", format!("{}-OUT", chain(queue))),
    ]
}

fn xtables_install(queue: u16) -> Result<(), String> {
    let q = queue.to_string();
    for (tool, proto, _) in XTABLES {
        let base = ["-w", "-t", "mangle"];
        let queue_rule = ["-j", "NFQUEUE", "--queue-num", &q, "--queue-bypass"];
        for (hook, chain) in xtables_chains(queue) {
            let chain = chain.as_str();
            run(tool, &[&base[..], &["-N", chain]].concat(), None)?;
            let plain = [&base[..], &["-A", chain, "-p", proto], &queue_rule[..]].concat();
            run(tool, &plain, None)?;
            if hook == "PREROUTING" {
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
                        &queue_rule[..],
                    ]
                    .concat();
                    run(tool, &ct, None)?;
                }
            }
            // Appended, and only ICMP jumps: the queue's accept ends the
            // table for the packet, so other mangle rules (marks, DSCP)
            // come first, and other traffic never enters the chain.
            let jump = [&base[..], &["-A", hook, "-p", proto, "-j", chain]].concat();
            run(tool, &jump, None)?;
        }
    }
    Ok(())
}

fn nft_table_exists(family: &str, table: &str) -> bool {
    run("nft", &["list", "table", family, table], None).is_ok()
}

/// Packets counted by a listing's rules (`nft list` "packets N", or the
/// first column of `iptables -L -v -x`).
fn nft_packets(listing: &str) -> u64 {
    listing
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

fn xtables_packets(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.contains("NFQUEUE"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Removes the rules of one queue, of either kind, and returns how many
/// packets they had queued. Errors name what could not be removed.
fn remove_queue(queue: Option<u16>) -> Result<(Vec<String>, u64), String> {
    let mut removed = Vec::new();
    let mut packets = 0;
    let mut failures = Vec::new();
    // This version's table and chains (mangle), or those of versions
    // before rules were named per queue (chain ICMPMON in raw).
    let (nft, table, chains): (String, &str, Vec<String>) = match queue {
        Some(q) => (
            nft_table(q),
            "mangle",
            xtables_chains(q).into_iter().map(|(_, c)| c).collect(),
        ),
        None => ("icmpmon".into(), "raw", vec![OLD_CHAIN.to_string()]),
    };
    if let Ok(listing) = run("nft", &["list", "table", "inet", &nft], None) {
        packets += nft_packets(&listing);
        match run("nft", &["delete", "table", "inet", &nft], None) {
            Ok(_) => removed.push(format!("nft table inet {nft}")),
            Err(e) => failures.push(e),
        }
    }
    for (tool, proto, _) in XTABLES {
        for chain in &chains {
            let t = table;
            let Ok(listing) = run(tool, &["-w", "-t", t, "-L", chain, "-v", "-x", "-n"], None)
            else {
                continue;
            };
            packets += xtables_packets(&listing);
            // Unhook first: a chain still referenced cannot be deleted.
            // Jumps of this version name the protocol; older ones did not.
            for hook in ["PREROUTING", "OUTPUT"] {
                let with_proto = ["-w", "-t", t, "-D", hook, "-p", proto, "-j", chain];
                while run(tool, &with_proto, None).is_ok() {}
                while run(tool, &["-w", "-t", t, "-D", hook, "-j", chain], None).is_ok() {}
            }
            let gone = run(tool, &["-w", "-t", t, "-F", chain], None)
                .and_then(|_| run(tool, &["-w", "-t", t, "-X", chain], None));
            match gone {
                Ok(_) => removed.push(format!("{tool} chain {chain} ({t} table)")),
                Err(e) => failures.push(e),
            }
        }
    }
    if failures.is_empty() {
        Ok((removed, packets))
    } else {
        Err(failures.join("; "))
    }
}

/// Queues that icmpmon rules feed, by the names of its tables and chains:
/// those with an nft table, and those with xtables chains.
fn queues_with_rules() -> (Vec<u16>, Vec<u16>) {
    let mut nft = Vec::new();
    if let Ok(tables) = run("nft", &["list", "tables"], None) {
        nft.extend(tables.split_whitespace().filter_map(|w| {
            w.strip_prefix(NFT_PREFIX)
                .and_then(|q| q.parse::<u16>().ok())
        }));
    }
    let mut xtables = Vec::new();
    for (tool, _, _) in XTABLES {
        if let Ok(listing) = run(tool, &["-w", "-t", "mangle", "-S"], None) {
            xtables.extend(listing.lines().filter_map(|l| {
                l.strip_prefix(&format!("-N {CHAIN_PREFIX}"))
                    .and_then(|q| q.trim().parse::<u16>().ok())
            }));
        }
    }
    for v in [&mut nft, &mut xtables] {
        v.sort_unstable();
        v.dedup();
    }
    (nft, xtables)
}

/// Removes rules whose queue nobody has bound (their owner died), rules of
/// `ours` (bound by us now, so left by an earlier run), and the chain of
/// icmpmon versions before rules were named per queue. Returns what it
/// removed, and the queues of the xtables chains left: other running
/// instances'.
fn remove_stale(ours: u16, bound: &dyn Fn(u16) -> bool) -> (Vec<String>, Vec<u16>) {
    let (nft, mut xtables) = queues_with_rules();
    let stale = |q: u16| q == ours || !bound(q);
    let mut all: Vec<u16> = nft.into_iter().chain(xtables.iter().copied()).collect();
    all.sort_unstable();
    all.dedup();
    let mut removed = Vec::new();
    for q in all.into_iter().filter(|q| stale(*q)) {
        match remove_queue(Some(q)) {
            Ok((r, _)) => removed.extend(r),
            Err(e) => tracing::warn!("cannot remove stale rules of queue {q}: {e}"),
        }
    }
    if let Ok((r, _)) = remove_queue(None) {
        removed.extend(r);
    }
    xtables.retain(|q| !stale(*q));
    (removed, xtables)
}

/// Deletes the `mangle` tables iptables-nft created for us if they hold
/// nothing but empty base chains now.
fn remove_empty_tables(existed: [bool; 2]) {
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

/// Removes what this process installed, if anything (idempotent; safe from
/// a panic hook or a signal handler's exit path). Returns the packets the
/// rules had queued, or why removal failed.
pub fn remove_installed() -> Option<Result<u64, String>> {
    // The exit path of a second Ctrl-C may find another thread removing
    // them already: wait for it a while, not forever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut installed = loop {
        match INSTALLED.try_lock() {
            Ok(g) => break g,
            Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                return Some(Err("another thread is still removing the rules".into()))
            }
        }
    };
    let ours = installed.take()?;
    let result = remove_queue(Some(ours.queue)).map(|(_, packets)| packets);
    if result.is_err() {
        // Still there: a later path (panic hook, exit) may try again.
        *installed = Some(ours);
    } else if ours.backend == Backend::Xtables {
        remove_empty_tables(ours.tables_existed);
    }
    Some(result)
}

/// Installed rules; dropping them without `remove` removes them too.
#[derive(Debug)]
pub struct Rules {
    backend: Backend,
}

impl Rules {
    /// Installs the rules of `queue` (which the caller has bound) with nft
    /// where the kernel has the queue expression, else with xtables, after
    /// removing stale rules. `bound` says whether a queue is bound now.
    /// Returns the rules and what stale rules were removed.
    pub fn install(
        queue: u16,
        bound: &dyn Fn(u16) -> bool,
    ) -> Result<(Self, Vec<String>), RulesError> {
        use caps::Capability::{CAP_NET_ADMIN, CAP_NET_RAW};
        if let Err(e) = crate::privilege::pass_to_children(&[CAP_NET_ADMIN, CAP_NET_RAW]) {
            tracing::warn!("cannot pass capabilities to iptables/nft: {e}");
        }
        let (stale, others) = remove_stale(queue, bound);
        let tables_existed = [
            nft_table_exists("ip", "mangle"),
            nft_table_exists("ip6", "mangle"),
        ];
        let backend = match run("nft", &["-f", "-"], Some(&nft_ruleset(queue))) {
            Ok(_) => Backend::Nft,
            Err(nft) => {
                tracing::info!("nftables queue unavailable, trying xtables: {nft}");
                // Left after the stale ones went: another monitor's.
                if let Some(&other) = others.first() {
                    return Err(RulesError::Shared(other));
                }
                if let Err(xtables) = xtables_install(queue) {
                    let _ = remove_queue(Some(queue));
                    remove_empty_tables(tables_existed);
                    return Err(RulesError::Install { nft, xtables });
                }
                Backend::Xtables
            }
        };
        *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Installed {
            backend,
            queue,
            tables_existed,
        });
        Ok((Self { backend }, stale))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Removes the rules; returns how many packets they queued.
    pub fn remove(self) -> Result<u64, String> {
        std::mem::forget(self);
        remove_installed().unwrap_or(Ok(0))
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        if let Some(Err(e)) = remove_installed() {
            eprintln!("icmpmon: cannot remove the queue rules: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_ruleset_queues_both_families_with_bypass() {
        let r = nft_ruleset(7);
        assert!(r.starts_with("table inet icmpmon_7 {"));
        assert_eq!(r.matches("counter queue num 7 bypass").count(), 2);
        assert!(r.contains("hook prerouting priority mangle"));
        assert!(r.contains("hook output priority mangle"));
        assert!(r.contains("{ icmp, ipv6-icmp }"));
    }

    #[test]
    fn packet_counts_from_listings() {
        let nft = "table inet icmpmon_7 {\n chain output {\n meta l4proto { icmp, ipv6-icmp } counter packets 12 bytes 1008 queue num 7 bypass\n }\n chain prerouting {\n counter packets 30 bytes 5 queue num 7 bypass\n }\n}";
        assert_eq!(nft_packets(nft), 42);
        let ipt = "Chain ICMPMON-7 (2 references)\n    pkts      bytes target     prot opt in     out     source               destination\n      17     1428 NFQUEUE    1    --  *      *       0.0.0.0/0            0.0.0.0/0            ctstate NEW NFQUEUE num 7 bypass\n";
        assert_eq!(xtables_packets(ipt), 17);
    }
}

//! The firewall rules that send ICMP to icmpmon: to its NFQUEUE queue
//! (inline) or to its NFLOG groups (a copy, passive). A table (nft) or
//! chains (xtables) of icmpmon's own per queue or group number, so that
//! they can be found and removed whole: at the end of a run, on error, on
//! panic, on a second Ctrl-C, and at a later start after a crash.
//!
//! Ownership: rules are named for their number (`table inet icmpmon_N` and
//! chain `ICMPMON-N` for queue N; `table inet icmpmon_log_N` and chain
//! `ICMPMON-LOG-N` for log group N), and the kernel lets one socket bind a
//! queue or a log group. An instance binds before it installs rules, so
//! rules whose number nobody has bound are stale (their owner died) and
//! rules whose number is bound belong to a running instance and are left
//! alone.
//!
//! Neither kind makes ICMP fail without icmpmon: queue rules use bypass
//! (with nobody bound, the kernel accepts), and a log rule whose group
//! nobody bound logs nothing. The rules count the packets they match, which
//! is how packets the kernel let through unseen (fail-open on a full
//! queue, a log batch lost) are counted at the end.
//!
//! Both kinds see packets after defragmentation, as the kernel module's
//! hooks do. nf_defrag runs in a namespace only once something asks for
//! it: a rule placed where it never runs (after a return) asks for it
//! alone: xtables' `socket` match, nft's `tproxy` statement (nft's
//! `socket` expression does not ask). Where the kernel has neither, a
//! conntrack match asks for it, bringing connection tracking with it.
//!
//! The tools run as children with the capabilities icmpmon keeps in its
//! ambient set (see `privilege`), so removal works the same for root, for
//! a service with ambient capabilities and for a binary with file
//! capabilities. A failed removal is reported, never silent.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Prefixes of icmpmon's nft tables and xtables chains, per kind.
const NFT_QUEUE: &str = "icmpmon_";
const NFT_LOG: &str = "icmpmon_log_";
const CHAIN_QUEUE: &str = "ICMPMON-";
const CHAIN_LOG: &str = "ICMPMON-LOG-";
/// The chain of icmpmon before rules were named per queue.
const OLD_CHAIN: &str = "ICMPMON";

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
    fn kind(self) -> Kind {
        match self {
            Target::Queue(_) => Kind::Queue,
            Target::Log { .. } => Kind::Log,
        }
    }
    fn number(self) -> u16 {
        match self {
            Target::Queue(q) => q,
            Target::Log { group, .. } => group,
        }
    }
    /// The nft statement for packets of `hook` (after the match).
    fn nft_statement(self, hook: Hook) -> String {
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
    fn xtables_target(self, hook: Hook) -> Vec<String> {
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
    fn xtables_name(self) -> &'static str {
        match self {
            Kind::Queue => "NFQUEUE",
            Kind::Log => "NFLOG",
        }
    }
    fn nft_table(self, n: u16) -> String {
        match self {
            Kind::Queue => format!("{NFT_QUEUE}{n}"),
            Kind::Log => format!("{NFT_LOG}{n}"),
        }
    }
    fn chain(self, n: u16) -> String {
        match self {
            Kind::Queue => format!("{CHAIN_QUEUE}{n}"),
            Kind::Log => format!("{CHAIN_LOG}{n}"),
        }
    }
    /// The number in one of this kind's table names.
    fn number_of_table(self, name: &str) -> Option<u16> {
        match self {
            Kind::Queue => name.strip_prefix(NFT_QUEUE)?.parse().ok(),
            Kind::Log => name.strip_prefix(NFT_LOG)?.parse().ok(),
        }
    }
    /// The number in one of this kind's (prerouting) chain names.
    fn number_of_chain(self, name: &str) -> Option<u16> {
        match self {
            Kind::Queue => name.strip_prefix(CHAIN_QUEUE)?.parse().ok(),
            Kind::Log => name.strip_prefix(CHAIN_LOG)?.parse().ok(),
        }
    }
    /// The xtables chains of number `n`: `…-N` from prerouting (it also
    /// holds the defragmentation rule, which the `socket` match allows in
    /// prerouting only), `…-N-OUT` from output (locally made packets are not
    /// fragments yet).
    fn xtables_chains(self, n: u16) -> [(Hook, String); 2] {
        [
            (Hook::Prerouting, self.chain(n)),
            (Hook::Output, format!("{}-OUT", self.chain(n))),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// `in`, forwarded packets included.
    Prerouting,
    /// `out`: sent by this host.
    Output,
}

impl Hook {
    fn xtables_chain(self) -> &'static str {
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

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(
        "cannot install the {what} rules: nftables failed ({nft}) and so did xtables ({xtables})"
    )]
    Install {
        what: &'static str,
        nft: String,
        xtables: String,
    },
    #[error(
        "another icmpmon captures with the xtables NFQUEUE target in this network namespace \
         (queue {0}): a packet reaches only the first NFQUEUE rule of a table, so a second \
         monitor would blind the first. Stop that one, or use a passive source (packet, \
         nflog) or the kernel module, which serve any number of monitors"
    )]
    Shared(u16),
}

/// What is installed now, for every cleanup path to find.
static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);

#[derive(Debug, Clone, Copy)]
struct Installed {
    backend: Backend,
    kind: Kind,
    number: u16,
    /// Whether `table ip mangle` / `table ip6 mangle` existed before
    /// (iptables-nft creates them; an empty one icmpmon created is removed
    /// again).
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

/// How the rules get whole packets (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defrag {
    /// A `tproxy` rule that never runs (nft's `socket` expression, unlike
    /// xtables' match, does not enable defragmentation; `tproxy` does).
    Tproxy,
    /// A conntrack match, which brings connection tracking with it.
    Conntrack,
}

const ICMP_MATCH: &str = "meta l4proto { icmp, ipv6-icmp }";

fn nft_ruleset(target: Target, defrag: Defrag) -> String {
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

/// The xtables tools, the ICMP protocol name each filters on, and the nft
/// family of their tables (iptables-nft).
const XTABLES: [(&str, &str, &str); 2] = [
    ("iptables", "icmp", "ip"),
    ("ip6tables", "ipv6-icmp", "ip6"),
];

/// Never runs (after the chain's return): asks for defragmentation alone.
const DEFRAG_RULE: [&str; 5] = ["-m", "socket", "--transparent", "-j", "RETURN"];

fn xtables_install(target: Target) -> Result<(), String> {
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

fn nft_table_exists(family: &str, table: &str) -> bool {
    run("nft", &["list", "table", family, table], None).is_ok()
}

/// Packets counted by a listing's rules (`nft list` "packets N").
fn nft_packets(listing: &str) -> u64 {
    listing
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

/// Packets counted by the `target` rules of `iptables -L -v -x` (first
/// column).
fn xtables_packets(listing: &str, target: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(target))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Removes the rules of one number, of either backend, and returns how
/// many packets they had matched. `None`: the chain of icmpmon versions
/// before rules were named per queue. Errors name what could not be
/// removed.
fn remove_rules(kind: Kind, number: Option<u16>) -> Result<(Vec<String>, u64), String> {
    let mut removed = Vec::new();
    let mut packets = 0;
    let mut failures = Vec::new();
    let (nft, table, chains): (String, &str, Vec<String>) = match number {
        Some(n) => (
            kind.nft_table(n),
            "mangle",
            kind.xtables_chains(n).into_iter().map(|(_, c)| c).collect(),
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
            packets += xtables_packets(&listing, kind.xtables_name());
            // Unhook first: a chain still referenced cannot be deleted.
            // Jumps of this version name the protocol; older ones did not.
            for hook in [Hook::Prerouting, Hook::Output] {
                let hook = hook.xtables_chain();
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

/// Numbers of `kind` that icmpmon rules use, by the names of its tables and
/// chains: those with an nft table, and those with xtables chains.
fn numbers_with_rules(kind: Kind) -> (Vec<u16>, Vec<u16>) {
    let mut nft = Vec::new();
    if let Ok(tables) = run("nft", &["list", "tables"], None) {
        nft.extend(
            tables
                .split_whitespace()
                .filter_map(|w| kind.number_of_table(w)),
        );
    }
    let mut xtables = Vec::new();
    for (tool, _, _) in XTABLES {
        if let Ok(listing) = run(tool, &["-w", "-t", "mangle", "-S"], None) {
            xtables.extend(
                listing
                    .lines()
                    .filter_map(|l| kind.number_of_chain(l.strip_prefix("-N ")?.trim())),
            );
        }
    }
    for v in [&mut nft, &mut xtables] {
        v.sort_unstable();
        v.dedup();
    }
    (nft, xtables)
}

/// Removes rules of `kind` whose number nobody has bound (their owner
/// died), rules of `ours` (bound by us now, so left by an earlier run),
/// and the chain of icmpmon versions before rules were named per queue.
/// Returns what it removed, and the numbers of the xtables chains left:
/// other running instances'.
fn remove_stale(kind: Kind, ours: u16, bound: &dyn Fn(u16) -> bool) -> (Vec<String>, Vec<u16>) {
    let (nft, mut xtables) = numbers_with_rules(kind);
    let stale = |n: u16| n == ours || !bound(n);
    let mut all: Vec<u16> = nft.into_iter().chain(xtables.iter().copied()).collect();
    all.sort_unstable();
    all.dedup();
    let mut removed = Vec::new();
    for n in all.into_iter().filter(|n| stale(*n)) {
        match remove_rules(kind, Some(n)) {
            Ok((r, _)) => removed.extend(r),
            Err(e) => tracing::warn!("cannot remove stale rules of {n}: {e}"),
        }
    }
    if kind == Kind::Queue {
        if let Ok((r, _)) = remove_rules(kind, None) {
            removed.extend(r);
        }
    }
    xtables.retain(|n| !stale(*n));
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
    let result = remove_rules(ours.kind, Some(ours.number)).map(|(_, packets)| packets);
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
    target: Target,
}

impl Rules {
    /// Installs the rules of `target` (whose queue or groups the caller has
    /// bound) with nft, else with xtables, after removing stale rules of
    /// its kind. `bound` says whether a queue or group is bound now.
    /// Returns the rules and what stale rules were removed.
    pub fn install(
        target: Target,
        bound: &dyn Fn(u16) -> bool,
    ) -> Result<(Self, Vec<String>), RulesError> {
        use caps::Capability::{CAP_NET_ADMIN, CAP_NET_RAW};
        if let Err(e) = crate::privilege::pass_to_children(&[CAP_NET_ADMIN, CAP_NET_RAW]) {
            tracing::warn!("cannot pass capabilities to iptables/nft: {e}");
        }
        let kind = target.kind();
        let number = target.number();
        let (stale, others) = remove_stale(kind, number, bound);
        let tables_existed = [
            nft_table_exists("ip", "mangle"),
            nft_table_exists("ip6", "mangle"),
        ];
        let nft = run(
            "nft",
            &["-f", "-"],
            Some(&nft_ruleset(target, Defrag::Tproxy)),
        )
        .or_else(|e| {
            tracing::info!("nft with the tproxy statement failed ({e}); trying conntrack");
            run(
                "nft",
                &["-f", "-"],
                Some(&nft_ruleset(target, Defrag::Conntrack)),
            )
        });
        let backend = match nft {
            Ok(_) => Backend::Nft,
            Err(nft) => {
                tracing::info!("nftables unavailable, trying xtables: {nft}");
                // Left after the stale ones went: another monitor's. A
                // queue rule ends the table for a packet; a log rule does
                // not, so log chains can share.
                match others.first() {
                    Some(&other) if kind == Kind::Queue => return Err(RulesError::Shared(other)),
                    _ => {}
                }
                if let Err(xtables) = xtables_install(target) {
                    let _ = remove_rules(kind, Some(number));
                    remove_empty_tables(tables_existed);
                    return Err(RulesError::Install {
                        what: kind.xtables_name(),
                        nft,
                        xtables,
                    });
                }
                Backend::Xtables
            }
        };
        *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Installed {
            backend,
            kind,
            number,
            tables_existed,
        });
        Ok((Self { backend, target }, stale))
    }

    /// Which tool installed them, in words.
    pub fn describe(&self) -> &'static str {
        self.backend.describe(self.target)
    }

    /// Removes the rules; returns how many packets they matched.
    pub fn remove(self) -> Result<u64, String> {
        std::mem::forget(self);
        remove_installed().unwrap_or(Ok(0))
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        if let Some(Err(e)) = remove_installed() {
            eprintln!("icmpmon: cannot remove icmpmon's firewall rules: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ruleset_queues_both_families_with_bypass() {
        let r = nft_ruleset(Target::Queue(7), Defrag::Tproxy);
        assert!(r.starts_with("table inet icmpmon_7 {"));
        assert_eq!(r.matches("counter queue num 7 bypass").count(), 2);
        assert!(r.contains("hook prerouting priority mangle"));
        assert!(r.contains("hook output priority mangle"));
        assert!(r.contains("{ icmp, ipv6-icmp }"));
        // The defragmentation rule sits after a return of every packet: it
        // never runs.
        let pre = r.lines().find(|l| l.contains("prerouting")).unwrap();
        assert!(pre.contains("bypass; return; meta l4proto tcp tproxy to :1;"));
        let ct = nft_ruleset(Target::Queue(7), Defrag::Conntrack);
        assert!(!ct.contains("tproxy"));
        assert_eq!(ct.matches("ct state").count(), 1);
    }

    #[test]
    fn log_ruleset_sends_out_to_the_next_group() {
        let t = Target::Log {
            group: 40,
            snaplen: 256,
            threshold: 64,
        };
        let r = nft_ruleset(t, Defrag::Tproxy);
        assert!(r.starts_with("table inet icmpmon_log_40 {"));
        let line = |hook: &str| r.lines().find(|l| l.contains(hook)).unwrap().to_string();
        assert!(line("hook prerouting").contains("counter log group 40 snaplen 256"));
        assert!(line("hook output").contains("counter log group 41 snaplen 256"));
        let out = t.xtables_target(Hook::Output).join(" ");
        assert_eq!(
            out,
            "-j NFLOG --nflog-group 41 --nflog-size 256 --nflog-threshold 64"
        );
        let pre = t.xtables_target(Hook::Prerouting).join(" ");
        assert!(pre.ends_with("--nflog-group 40 --nflog-size 256 --nflog-threshold 64"));
    }

    #[test]
    fn names_of_one_kind_are_not_the_others() {
        assert_eq!(Kind::Queue.number_of_table("icmpmon_7"), Some(7));
        assert_eq!(Kind::Queue.number_of_table("icmpmon_log_7"), None);
        assert_eq!(Kind::Log.number_of_table("icmpmon_log_7"), Some(7));
        assert_eq!(Kind::Log.number_of_table("icmpmon_7"), None);
        assert_eq!(Kind::Queue.number_of_chain("ICMPMON-7"), Some(7));
        assert_eq!(Kind::Queue.number_of_chain("ICMPMON-7-OUT"), None);
        assert_eq!(Kind::Queue.number_of_chain("ICMPMON-LOG-7"), None);
        assert_eq!(Kind::Log.number_of_chain("ICMPMON-LOG-7"), Some(7));
        assert_eq!(Kind::Log.number_of_chain("ICMPMON-LOG-7-OUT"), None);
    }

    #[test]
    fn packet_counts_from_listings() {
        let nft = "table inet icmpmon_7 {\n chain output {\n meta l4proto { icmp, ipv6-icmp } counter packets 12 bytes 1008 queue num 7 bypass\n }\n chain prerouting {\n counter packets 30 bytes 5 queue num 7 bypass\n }\n}";
        assert_eq!(nft_packets(nft), 42);
        let ipt = "Chain ICMPMON-7 (2 references)\n    pkts      bytes target     prot opt in     out     source               destination\n      17     1428 NFQUEUE    1    --  *      *       0.0.0.0/0            0.0.0.0/0            ctstate NEW NFQUEUE num 7 bypass\n       3      100 RETURN     0    --  *      *       0.0.0.0/0            0.0.0.0/0\n";
        assert_eq!(xtables_packets(ipt, "NFQUEUE"), 17);
        assert_eq!(xtables_packets(ipt, "NFLOG"), 0);
    }
}

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
//! capabilities. A failed removal is returned (or, from `Drop`, logged),
//! never silent. Once the run has dropped its capabilities, the rules
//! belong to its rules helper, a process that kept them (`remote`): the
//! `Ledger` then asks it, and it removes them by itself if icmpmon goes
//! away without asking.
//!
//! What is installed is kept in a `Ledger` the caller creates and shares
//! with its exit paths (panic hook, second interrupt): no global state.
//! `target` names things, `tool` runs the tools, `nft` and `xtables` are
//! the two forms of the rules; this module installs and removes them.

mod exit;
mod nft;
mod remote;
mod target;
mod tool;
mod xtables;

use std::sync::{Arc, Mutex, OnceLock};

use nft::{nft_packets, nft_ruleset, nft_table_exists, Defrag};
use target::{Kind, OLD_CHAIN};
use tool::{run, ToolError};
use xtables::{remove_empty_tables, unhook, xtables_install, xtables_packets, XTABLES};

pub use exit::{lock_within, EXIT_WAIT};
pub use remote::{
    cut_at_char, Answer, Handoff, Privileged, Request, ANSWER_LEN, HANDOFF_LEN, REQUEST_LEN,
};
pub use target::{Backend, Target};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(
        "cannot install the {what} rules: nftables failed ({nft}) and so did xtables ({xtables})"
    )]
    Install {
        what: &'static str,
        nft: ToolError,
        xtables: ToolError,
    },
    #[error(
        "another icmpmon captures with the xtables NFQUEUE target in this network namespace \
         (queue {0}): a packet reaches only the first NFQUEUE rule of a table, so a second \
         monitor would blind the first. Stop that one, or use a passive source (packet, \
         nflog) or the kernel module, which serve any number of monitors"
    )]
    Shared(u16),
}

/// What running the firewall tools needs (iptables-legacy's socket needs
/// CAP_NET_RAW), kept by the sources with rules until they are removed.
pub const CAPABILITIES: &[caps::Capability] = &[
    caps::Capability::CAP_NET_ADMIN,
    caps::Capability::CAP_NET_RAW,
];

/// Why rules could not be removed (they may still be there).
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("{}", join(.0))]
    Failed(Vec<ToolError>),
    #[error("another thread is still removing the rules")]
    Busy,
    /// From the rules helper (privilege separation).
    #[error("{0}")]
    Helper(String),
}

/// A rules helper that did not answer.
impl From<std::io::Error> for RemoveError {
    fn from(e: std::io::Error) -> Self {
        RemoveError::Helper(format!("the rules helper stopped answering: {e}"))
    }
}

fn join(failures: &[ToolError]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Installed {
    backend: Backend,
    kind: Kind,
    number: u16,
    /// Whether `table ip mangle` / `table ip6 mangle` existed before
    /// (iptables-nft creates them; an empty one icmpmon created is removed
    /// again).
    tables_existed: [bool; 2],
}

/// Removes the rules of one number, of either backend, and returns how
/// many packets they had matched. `None`: the chain of icmpmon versions
/// before rules were named per queue. Errors name what could not be
/// removed.
fn remove_rules(kind: Kind, number: Option<u16>) -> Result<(Vec<String>, u64), RemoveError> {
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
            unhook(tool, proto, t, chain);
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
        Err(RemoveError::Failed(failures))
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

/// What this process installed, for every cleanup path to find: the run
/// creates one, hands it to the source that installs rules and keeps
/// clones for its panic hook and its second-interrupt exit. Once the run
/// has handed the rules to a helper (`delegate`), removing them is asked
/// of it.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    installed: Arc<Mutex<Option<Installed>>>,
    helper: Arc<OnceLock<Arc<dyn Privileged>>>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, `remove` and `Rules::stop_sending` are asked of
    /// `helper`, which holds the rules (see `remote`).
    pub fn delegate(&self, helper: Arc<dyn Privileged>) {
        let _ = self.helper.set(helper);
    }

    fn helper(&self) -> Option<&Arc<dyn Privileged>> {
        self.helper.get()
    }

    /// Removes what was installed, if anything (idempotent; safe from a
    /// panic hook or an exit path). Returns the packets the rules had
    /// matched, or why removal failed.
    pub fn remove(&self) -> Option<Result<u64, RemoveError>> {
        // The exit path of a second Ctrl-C may find another thread removing
        // them already: wait for it a while, not forever.
        let Some(mut installed) = lock_within(&self.installed, EXIT_WAIT) else {
            return Some(Err(RemoveError::Busy));
        };
        let ours = installed.take()?;
        let result = match self.helper() {
            Some(h) => match h.call(Request::Remove) {
                Ok(Answer::Removed(packets)) => Ok(packets),
                Ok(Answer::NotRemoved(why)) => Err(RemoveError::Helper(why)),
                Ok(other) => Err(RemoveError::Helper(format!(
                    "the rules helper answered {other:?}"
                ))),
                Err(e) => Err(e.into()),
            },
            None => remove_rules(ours.kind, Some(ours.number)).map(|(_, packets)| packets),
        };
        if result.is_err() {
            // Still there: a later path (panic hook, exit) may try again.
            *installed = Some(ours);
        } else if ours.backend == Backend::Xtables && self.helper().is_none() {
            remove_empty_tables(ours.tables_existed);
        }
        Some(result)
    }

    fn record(&self, installed: Installed) {
        *self.installed.lock().unwrap_or_else(|e| e.into_inner()) = Some(installed);
    }

    pub(crate) fn installed(&self) -> Option<Installed> {
        *self.installed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Installed rules; dropping them without `remove` removes them too.
#[derive(Debug)]
pub struct Rules {
    backend: Backend,
    target: Target,
    /// Taken by `remove`, so that `Drop` does not remove (and report) twice.
    ledger: Option<Ledger>,
    /// Stale rule sets removed before these were installed.
    stale: Vec<String>,
    /// What the rules had matched when `stop_sending` emptied them.
    matched: u64,
}

impl Rules {
    /// Installs the rules of `target` (whose queue or groups the caller has
    /// bound) with nft, else with xtables, after removing stale rules of
    /// its kind, and records them in `ledger`. `bound` says whether a
    /// queue or group is bound now. What stale rules were removed is kept
    /// for `take_notices`.
    pub fn install(
        target: Target,
        bound: &dyn Fn(u16) -> bool,
        ledger: &Ledger,
    ) -> Result<Self, RulesError> {
        if let Err(e) = crate::privilege::pass_to_children(CAPABILITIES) {
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
        ledger.record(Installed {
            backend,
            kind,
            number,
            tables_existed,
        });
        Ok(Self {
            backend,
            target,
            ledger: Some(ledger.clone()),
            stale,
            matched: 0,
        })
    }

    /// Rules installed by another process, taken over (the rules helper),
    /// and recorded in `ledger`.
    pub(crate) fn adopt(handoff: Handoff, ledger: &Ledger) -> Self {
        ledger.record(Installed {
            backend: handoff.backend,
            kind: handoff.target.kind(),
            number: handoff.target.number(),
            tables_existed: handoff.tables_existed,
        });
        Self {
            backend: handoff.backend,
            target: handoff.target,
            ledger: Some(ledger.clone()),
            stale: Vec::new(),
            matched: 0,
        }
    }

    /// What a helper needs to take them over, while they are installed.
    pub fn handoff(&self) -> Option<Handoff> {
        let installed = self.ledger.as_ref()?.installed()?;
        Some(Handoff {
            backend: installed.backend,
            target: self.target,
            tables_existed: installed.tables_existed,
        })
    }

    /// What installing them did that the user should hear of: each stale
    /// rule set removed (once).
    pub fn take_notices(&mut self) -> Vec<String> {
        let bound = match self.target {
            Target::Queue(_) => "queue",
            Target::Log { .. } => "log group",
        };
        std::mem::take(&mut self.stale)
            .into_iter()
            .map(|what| {
                format!(
                    "removed stale {what}: no program has its {bound} bound (an icmpmon that died)"
                )
            })
            .collect()
    }

    /// Which tool installed them, in words.
    pub fn describe(&self) -> &'static str {
        self.backend.describe(self.target)
    }

    /// Stops the rules sending packets while keeping their hooks: removing
    /// a table unregisters its hooks, and the kernel then drops what is
    /// still queued (verdicts for those come back refused). With nftables
    /// icmpmon's table is emptied; with xtables the jumps to its chains go
    /// (the mangle tables, which iptables-nft may remove at the end, stay).
    /// True when that was done: the caller drains its queue, then calls
    /// `remove`; false: remove them first (no new packets then), then drain.
    pub fn stop_sending(&mut self) -> bool {
        if let Some(h) = self.ledger.as_ref().and_then(Ledger::helper) {
            return matches!(h.call(Request::StopSending), Ok(Answer::Stopping(true)));
        }
        let (kind, number) = (self.target.kind(), self.target.number());
        if self.backend == Backend::Xtables {
            // The chains stay (with their counts) until `remove`; the
            // mangle tables too, which hold the hooks.
            for (tool, proto, _) in XTABLES {
                for (_, chain) in kind.xtables_chains(number) {
                    unhook(tool, proto, "mangle", &chain);
                }
            }
            return true;
        }
        let table = kind.nft_table(number);
        let Ok(listing) = run("nft", &["list", "table", "inet", &table], None) else {
            return false;
        };
        match run("nft", &["flush", "table", "inet", &table], None) {
            Ok(_) => {
                self.matched = nft_packets(&listing);
                true
            }
            Err(e) => {
                tracing::info!("cannot empty {table} before removing it: {e}");
                false
            }
        }
    }

    /// Removes the rules; returns how many packets they matched.
    pub fn remove(mut self) -> Result<u64, RemoveError> {
        let ledger = self.ledger.take();
        let removed = ledger.and_then(|l| l.remove()).unwrap_or(Ok(0));
        removed.map(|n| n + self.matched)
    }
}

impl Drop for Rules {
    /// Removes them; on failure they stay in the ledger, whose owner tries
    /// again and reports.
    fn drop(&mut self) {
        if let Some(Err(e)) = self.ledger.take().and_then(|l| l.remove()) {
            tracing::warn!("cannot remove icmpmon's firewall rules yet: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use target::Hook;

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

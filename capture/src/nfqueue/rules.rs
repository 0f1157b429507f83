//! The firewall rules that send ICMP to icmpmon's queue: a table (nft) or a
//! chain (xtables) of icmpmon's own, so that they can be found and removed
//! whole — at the end of a run, on error, on panic, on a second Ctrl-C, and
//! at the next start after a crash.
//!
//! The rules use bypass: with nobody bound to the queue (icmpmon killed),
//! the kernel accepts the packets, so icmpmon never makes ICMP fail.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Name of icmpmon's nft table and xtables chain.
pub const NAME: &str = "icmpmon";
const CHAIN: &str = "ICMPMON";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nftables with the `queue` expression (table inet icmpmon).
    Nft,
    /// xtables NFQUEUE target (chain ICMPMON in the raw table).
    Xtables,
}

impl Backend {
    pub fn describe(self) -> &'static str {
        match self {
            Backend::Nft => "nftables queue expression (table inet icmpmon)",
            Backend::Xtables => "xtables NFQUEUE target (raw table, chain ICMPMON)",
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
}

/// What is installed now, for every cleanup path to find.
static INSTALLED: Mutex<Option<Backend>> = Mutex::new(None);

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
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
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("{cmd} {}: {}", args.join(" "), err.trim()))
    }
}

fn nft_ruleset(queue: u16) -> String {
    // Priority raw (-300): after defragmentation (-400), as the kernel
    // module's hooks. prerouting = in (and forwarded), output = out.
    format!(
        "table inet {NAME} {{\n\
         \tchain prerouting {{ type filter hook prerouting priority raw; \
         meta l4proto {{ icmp, ipv6-icmp }} queue num {queue} bypass; }}\n\
         \tchain output {{ type filter hook output priority raw; \
         meta l4proto {{ icmp, ipv6-icmp }} queue num {queue} bypass; }}\n\
         }}\n"
    )
}

/// The xtables tools and the ICMP protocol name each filters on.
const XTABLES: [(&str, &str); 2] = [("iptables", "icmp"), ("ip6tables", "ipv6-icmp")];

fn xtables_install(queue: u16) -> Result<(), String> {
    let q = queue.to_string();
    for (tool, proto) in XTABLES {
        let steps: [&[&str]; 4] = [
            &["-w", "-t", "raw", "-N", CHAIN],
            &[
                "-w",
                "-t",
                "raw",
                "-A",
                CHAIN,
                "-p",
                proto,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &q,
                "--queue-bypass",
            ],
            &["-w", "-t", "raw", "-I", "PREROUTING", "1", "-j", CHAIN],
            &["-w", "-t", "raw", "-I", "OUTPUT", "1", "-j", CHAIN],
        ];
        for args in steps {
            run(tool, args, None)?;
        }
    }
    Ok(())
}

/// Removes icmpmon's rules of both kinds, whatever is there; quiet when
/// there is nothing to remove. Returns what it removed.
pub fn remove_all() -> Vec<&'static str> {
    let mut removed = Vec::new();
    if run("nft", &["delete", "table", "inet", NAME], None).is_ok() {
        removed.push("nft table inet icmpmon");
    }
    for (tool, _) in XTABLES {
        // Unhook first: a chain still referenced cannot be deleted.
        let mut found = false;
        for hook in ["PREROUTING", "OUTPUT"] {
            while run(tool, &["-w", "-t", "raw", "-D", hook, "-j", CHAIN], None).is_ok() {
                found = true;
            }
        }
        let flushed = run(tool, &["-w", "-t", "raw", "-F", CHAIN], None).is_ok();
        let deleted = run(tool, &["-w", "-t", "raw", "-X", CHAIN], None).is_ok();
        if found || flushed || deleted {
            removed.push(if tool == "iptables" {
                "iptables chain ICMPMON"
            } else {
                "ip6tables chain ICMPMON"
            });
        }
    }
    removed
}

/// Removes what this process installed, if anything (idempotent; safe from
/// a panic hook or a signal handler's exit path).
pub fn remove_installed() {
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if installed.take().is_some() {
        remove_all();
    }
}

/// Installed rules; dropping it removes them.
#[derive(Debug)]
pub struct Rules {
    backend: Backend,
}

impl Rules {
    /// Cleans up a stale install, then installs with nft where the kernel
    /// has the queue expression, else with xtables. Returns the rules and
    /// what stale rules were removed.
    pub fn install(queue: u16) -> Result<(Self, Vec<&'static str>), RulesError> {
        let stale = remove_all();
        let backend = match run("nft", &["-f", "-"], Some(&nft_ruleset(queue))) {
            Ok(()) => Backend::Nft,
            Err(nft) => {
                tracing::info!("nftables queue unavailable, trying xtables: {nft}");
                if let Err(xtables) = xtables_install(queue) {
                    remove_all();
                    return Err(RulesError::Install { nft, xtables });
                }
                Backend::Xtables
            }
        };
        *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(backend);
        Ok((Self { backend }, stale))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        remove_installed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_ruleset_queues_both_families_with_bypass() {
        let r = nft_ruleset(7);
        assert!(r.starts_with("table inet icmpmon {"));
        assert_eq!(r.matches("queue num 7 bypass").count(), 2);
        assert!(r.contains("hook prerouting priority raw"));
        assert!(r.contains("hook output priority raw"));
        assert!(r.contains("{ icmp, ipv6-icmp }"));
    }
}

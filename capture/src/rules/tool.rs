//! Runs the firewall tools (nft, iptables, ip6tables) safely.

use std::io::Write;
use std::process::{Command, Stdio};

/// A firewall tool that failed: the command and what it said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub(super) String);

/// Where the firewall tools are looked for: fixed system directories, never
/// the caller's PATH, since they run with icmpmon's capabilities.
pub(super) const SYSTEM_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The tool's path in a system directory (falling back to the bare name,
/// which then fails to start with a clear error).
pub(super) fn tool_path(cmd: &str) -> std::path::PathBuf {
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
pub(super) fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ToolError> {
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
        .map_err(|e| ToolError(format!("{cmd}: {e}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| ToolError(format!("{cmd}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ToolError(format!("{cmd}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(ToolError(format!(
            "{cmd} {}: {}",
            args.join(" "),
            err.trim()
        )))
    }
}

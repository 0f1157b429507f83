//! Whether the BPF source can run here, and why not: the kernel version,
//! its BTF and the process's capabilities, checked before anything loads.

use crate::source::CaptureError;

/// The kernel this source needs: netfilter BPF links.
pub const MIN_KERNEL: (u32, u32) = (6, 4);
/// And for defragmented packets.
pub(crate) const DEFRAG_KERNEL: (u32, u32) = (6, 6);
/// Drop tracing: `kfree_skb`'s `reason` argument.
pub(crate) const DROPS_KERNEL: (u32, u32) = (5, 17);

/// Why the BPF source cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "{what} needs Linux {}.{} or later ({why}); this kernel is {release}",
        needs.0, needs.1
    )]
    KernelTooOld {
        what: &'static str,
        needs: (u32, u32),
        why: &'static str,
        release: String,
    },
    #[error("{what} needs the kernel's BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)")]
    NoBtf { what: &'static str },
    #[error(
        "{what} needs {missing} (run as root, or give the binary these capabilities: \
         setcap cap_bpf,cap_net_admin,cap_perfmon,cap_syslog+ep; CAP_SYSLOG only names the \
         functions that drop packets)"
    )]
    Capabilities { what: &'static str, missing: String },
    #[error(
        "this kernel cannot attach BPF programs to netfilter hooks (needs \
         CONFIG_NETFILTER_BPF_LINK): {0}"
    )]
    NoNetfilterLink(String),
    #[error("loading icmpmon's BPF programs: {0} (run with -v for the verifier's log)")]
    Load(String),
    #[error("{what}: {error}")]
    Kernel { what: &'static str, error: String },
}

impl BpfError {
    /// Why BPF cannot run, in a few words (for `auto`'s choice).
    pub fn why_not(&self) -> String {
        match self {
            BpfError::KernelTooOld { needs, release, .. } => {
                format!("needs Linux {}.{}+, this is {release}", needs.0, needs.1)
            }
            BpfError::NoBtf { .. } => "needs the kernel's BTF".into(),
            BpfError::Capabilities { missing, .. } => format!("needs {missing}"),
            other => other.to_string(),
        }
    }
}

impl From<BpfError> for CaptureError {
    fn from(e: BpfError) -> Self {
        CaptureError::new(e)
    }
}

/// Why this host cannot run the BPF source, checked without loading
/// anything (for `--source auto` and for clear errors).
pub fn unavailable(drops_only: bool) -> Option<BpfError> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let (needs, why) = if drops_only {
        (DROPS_KERNEL, "kfree_skb's drop reasons")
    } else {
        (MIN_KERNEL, "netfilter BPF links")
    };
    if kernel_version(&release).is_some_and(|v| v < needs) {
        return Some(BpfError::KernelTooOld {
            what: who(drops_only),
            needs,
            why,
            release,
        });
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some(BpfError::NoBtf {
            what: who(drops_only),
        });
    }
    let missing = missing_capabilities(!drops_only, drops_only);
    (!missing.is_empty()).then(|| BpfError::Capabilities {
        what: who(drops_only),
        missing: missing.join(" and "),
    })
}

/// What the user asked for, as errors name it.
pub(crate) fn who(drops_only: bool) -> &'static str {
    if drops_only {
        "drop tracing (--drops)"
    } else {
        "the bpf source"
    }
}

/// `6.12.38+deb13-amd64` → (6, 12).
pub(crate) fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The capabilities the programs need that this process lacks: CAP_BPF
/// to load, CAP_NET_ADMIN for netfilter links, CAP_PERFMON for the drop
/// tracepoint (CAP_SYS_ADMIN stands for CAP_BPF and CAP_PERFMON).
pub(crate) fn missing_capabilities(hooks: bool, drops: bool) -> Vec<&'static str> {
    use caps::{CapSet, Capability};
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    let admin = has(Capability::CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !(has(Capability::CAP_BPF) || admin) {
        missing.push("CAP_BPF");
    }
    if hooks && !has(Capability::CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if drops && !(has(Capability::CAP_PERFMON) || admin) {
        missing.push("CAP_PERFMON");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_read_from_release_strings() {
        assert_eq!(kernel_version("6.12.38+deb13-amd64"), Some((6, 12)));
        assert_eq!(kernel_version("6.1.0-40-cloud-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("7.3.1-rt"), Some((7, 3)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("6.3.9").unwrap() < MIN_KERNEL);
        assert!(kernel_version("6.18.44-fc").unwrap() >= DEFRAG_KERNEL);
    }
}

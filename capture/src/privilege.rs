//! Dropping capabilities once a live source is set up.
//!
//! What remains is what the way out needs, and the run gives it to helper
//! processes rather than keep it (the binary's privsep): the kernel checks
//! CAP_NET_ADMIN on nfnetlink messages against both the socket opener and
//! the *current* task (`netlink_ns_capable` ends in `ns_capable`), so
//! NFQUEUE verdicts and NFLOG configuration need it in the task that sends
//! them; removing the rules runs iptables/nft as a child, and
//! iptables-legacy's raw socket also needs CAP_NET_RAW. The module's CLOSE
//! needs no capability (version 2), so the kmod source keeps none.
//! Everything else goes.

pub use caps::Capability;
use caps::{CapSet, CapsHashSet};

/// Whether this thread can use `cap` now. Used to tell the kernel's EPERM
/// for "no capability" from its EPERM for "taken by another socket" (queue
/// and log group binds say both), since the /proc lists that would tell
/// are readable by root only.
pub fn effective(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// What was done, for the log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// The process had no capabilities to drop.
    Nothing,
    /// Every other capability is gone; these remain.
    AllBut(Vec<Capability>),
}

/// Who else keeps what is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// This process only (what it needs once more, such as CAP_SETUID to
    /// give root's uid up).
    Here,
    /// Also the programs it runs (raised into the inheritable and ambient
    /// sets): the nft/iptables children that remove rules.
    AndChildren,
}

/// Keeps only `keep` in every capability set (effective, permitted,
/// inheritable, ambient and, when CAP_SETPCAP allows, the bounding set, so
/// that a child started as uid 0 cannot regain the rest), and sets
/// no_new_privs. With `Kept::AndChildren`, kept capabilities are raised
/// into the ambient set for the children that remove rules.
pub fn drop_all_but(keep: &[Capability], who: Kept) -> Result<Dropped, caps::errors::CapsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    if permitted.is_empty() {
        return Ok(Dropped::Nothing);
    }
    let keep: CapsHashSet = keep
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // goes with the rest below.
    // (What is kept for this process alone needs no place in it.)
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::read(None, CapSet::Bounding)? {
            if who == Kept::Here || !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    // Inheritable and ambient hold what is kept, so that the iptables/nft
    // children that remove the NFQUEUE rules get it whatever uid runs
    // icmpmon (a service with ambient capabilities, a binary with file
    // capabilities): ambient capabilities survive exec.
    match who {
        Kept::AndChildren => {
            caps::set(None, CapSet::Inheritable, &keep)?;
            pass_to_children(&keep.iter().copied().collect::<Vec<_>>())?;
        }
        Kept::Here => caps::clear(None, CapSet::Inheritable)?,
    }
    rustix::thread::set_no_new_privs(true)
        .map_err(|e| caps::errors::CapsError::from(format!("cannot set no_new_privs: {e}")))?;
    let mut kept: Vec<Capability> = keep.into_iter().collect();
    kept.sort_by_key(|c| c.index());
    Ok(Dropped::AllBut(kept))
}

/// Raises those of `wanted` this process holds into its inheritable and
/// ambient sets, so that the programs it runs (iptables, nft) get them
/// whatever uid it runs as: a service given ambient capabilities, or a
/// binary given file capabilities (whose children would get none).
pub fn pass_to_children(wanted: &[Capability]) -> Result<(), caps::errors::CapsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    for cap in wanted.iter().filter(|c| permitted.contains(c)) {
        caps::raise(None, CapSet::Inheritable, *cap)?;
        caps::raise(None, CapSet::Ambient, *cap)?;
    }
    Ok(())
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::Nothing => write!(f, "no capabilities held"),
            Dropped::AllBut(kept) if kept.is_empty() => write!(f, "dropped all capabilities"),
            Dropped::AllBut(kept) => {
                let names: Vec<String> =
                    kept.iter().map(|c| c.to_string().to_lowercase()).collect();
                write!(f, "dropped all capabilities but {}", names.join(", "))
            }
        }
    }
}

//! Root's uid given up (as `tcpdump -Z` does): started as root, the
//! monitor becomes an unprivileged user once its source is open, so that
//! with no capability left it cannot write root's own files either (owner
//! permissions need none). What it still opens later, the files reopened
//! on SIGHUP, a files helper opens for it (`files`).

use anyhow::{bail, Context};
use nix::unistd::{Gid, Uid, User};

use crate::stderr::say;
use icmpmon_capture::privilege::{self, Capability};

/// The users the monitor becomes when started as root and not told: the
/// first that exists. A user of its own shares nothing; `nobody` is shared
/// with other daemons (see docs/security.md).
const DEFAULT_USERS: [&str; 2] = ["icmpmon", "nobody"];

/// The uid and gid the monitor becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub name: String,
    uid: Uid,
    gid: Gid,
}

impl Identity {
    /// Who the monitor becomes for `--user` (None: the default): icmpmon
    /// or nobody when icmpmon runs as root and is not told otherwise; no
    /// one (it stays) for `--user root` or when it is not root. Looked up
    /// and checked now, before any thread or output exists: a named user
    /// that cannot be become stops the run here; the default is skipped
    /// with a message (root of a user namespace that maps no other uid,
    /// `unshare -r`).
    pub(crate) fn wanted(user: Option<&str>) -> anyhow::Result<Option<Self>> {
        let root = Uid::effective().is_root() || Uid::current().is_root();
        if !root {
            return match user {
                Some(u) if !is_current(u) => {
                    bail!("--user {u}: icmpmon runs as that user only when started as root")
                }
                _ => Ok(None),
            };
        }
        let identity = match user {
            Some(name) => match User::from_name(name)
                .with_context(|| format!("--user {name}: cannot look the user up"))?
            {
                Some(u) if u.uid.is_root() => return Ok(None),
                Some(u) if u.gid.as_raw() == 0 => {
                    bail!("--user {name}: its group is root's (gid 0): name a user of its own")
                }
                Some(u) => Self {
                    name: name.to_string(),
                    uid: u.uid,
                    gid: u.gid,
                },
                None => bail!("--user {name}: no such user"),
            },
            None => Self::default_user(),
        };
        match identity.can_become() {
            Ok(()) => Ok(Some(identity)),
            Err(why) if user.is_some() => {
                bail!("--user {}: cannot become it: {why}", identity.name)
            }
            Err(why) => {
                say!(
                    "icmpmon: cannot become user {} ({why}): the monitor keeps root's uid, \
                     without a capability",
                    identity.name
                );
                Ok(None)
            }
        }
    }

    /// The first of `DEFAULT_USERS` that exists (a name service that cannot
    /// be read counts as none), else the kernel's overflow ids, which a
    /// minimal container's root can still become.
    fn default_user() -> Self {
        DEFAULT_USERS
            .iter()
            .find_map(|name| match User::from_name(name) {
                Ok(Some(u)) if !u.uid.is_root() && u.gid.as_raw() != 0 => Some(Self {
                    name: name.to_string(),
                    uid: u.uid,
                    gid: u.gid,
                }),
                _ => None,
            })
            .unwrap_or(Self {
                name: "65534".into(),
                uid: Uid::from_raw(65534),
                gid: Gid::from_raw(65534),
            })
    }

    /// Why `assume` would fail, found before anything is set up: the
    /// capabilities it takes, the ids mapped in this user namespace, and
    /// setgroups allowed in it.
    fn can_become(&self) -> Result<(), String> {
        for cap in [Capability::CAP_SETUID, Capability::CAP_SETGID] {
            if !privilege::effective(cap) {
                return Err(format!("no {cap}"));
            }
        }
        let mapped = |file: &str, id: u32| {
            std::fs::read_to_string(file).is_ok_and(|map| {
                map.lines().any(|l| {
                    let n: Vec<u64> = l.split_whitespace().filter_map(|f| f.parse().ok()).collect();
                    matches!(n[..], [inside, _, count] if (inside..inside + count).contains(&u64::from(id)))
                })
            })
        };
        if !mapped("/proc/self/uid_map", self.uid.as_raw())
            || !mapped("/proc/self/gid_map", self.gid.as_raw())
        {
            return Err("its ids are not mapped in this user namespace".into());
        }
        if std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny") {
            return Err("this user namespace denies setgroups".into());
        }
        Ok(())
    }

    /// Becomes that user in every thread (the C library's setuid sets all
    /// of them): supplementary groups cleared, then the gid, then the uid
    /// (real, effective and saved), which also clears every capability
    /// set but the bounding set (`drop_all_but` has emptied that). Checked
    /// possible by `wanted`: a failure here ends the run.
    pub(crate) fn assume(&self) -> anyhow::Result<()> {
        let fail = |what: &str| format!("cannot become user {} ({what})", self.name);
        nix::unistd::setgroups(&[]).with_context(|| fail("supplementary groups"))?;
        nix::unistd::setresgid(self.gid, self.gid, self.gid).with_context(|| fail("gid"))?;
        nix::unistd::setresuid(self.uid, self.uid, self.uid).with_context(|| fail("uid"))?;
        let ids = nix::unistd::getresuid().with_context(|| fail("uid"))?;
        if [ids.real, ids.effective, ids.saved] != [self.uid; 3] {
            bail!("{}: the uid did not change", fail("uid"));
        }
        Ok(())
    }
}

/// Whether `user` names the user icmpmon already runs as.
fn is_current(user: &str) -> bool {
    matches!(User::from_name(user), Ok(Some(u)) if u.uid == Uid::effective())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_user_is_not_root() {
        let d = Identity::default_user();
        assert!(!d.uid.is_root() && d.gid.as_raw() != 0, "{d:?}");
    }
}

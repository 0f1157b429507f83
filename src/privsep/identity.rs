//! Root's uid given up (as `tcpdump -Z` does): started as root, the
//! monitor becomes an unprivileged user once its source is open, so that
//! with no capability left it cannot write root's own files either (owner
//! permissions need none). What it still opens later, the files reopened
//! on SIGHUP, a files helper opens for it (`files`).

use anyhow::{bail, Context};
use nix::unistd::{Gid, Uid, User};

/// The user the monitor becomes when started as root and not told.
pub(crate) const DEFAULT_USER: &str = "nobody";

/// The uid and gid the monitor becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub name: String,
    uid: Uid,
    gid: Gid,
    /// Named by --user, rather than the default.
    asked: bool,
}

impl Identity {
    /// Who the monitor becomes for `--user` (None: the default): nobody
    /// when icmpmon runs as root and is not told otherwise; no one (it
    /// stays) for `--user root` or when it is not root. Looked up now,
    /// while the name service can still be read.
    pub(crate) fn wanted(user: Option<&str>) -> anyhow::Result<Option<Self>> {
        let root = Uid::effective().is_root() || Uid::current().is_root();
        let name = user.unwrap_or(DEFAULT_USER);
        if !root {
            return match user {
                Some(u) if !is_current(u) => {
                    bail!("--user {u}: icmpmon runs as that user only when started as root")
                }
                _ => Ok(None),
            };
        }
        let found = User::from_name(name).with_context(|| format!("cannot look up user {name}"))?;
        let identity = match found {
            Some(u) if u.uid.is_root() => return Ok(None),
            Some(u) => Self {
                name: name.to_string(),
                uid: u.uid,
                gid: u.gid,
                asked: user.is_some(),
            },
            // Debian has nobody; a minimal container may not: its ids
            // (the kernel's overflow ids) still hold no file of root's.
            None if user.is_none() => Self {
                name: "65534".into(),
                uid: Uid::from_raw(65534),
                gid: Gid::from_raw(65534),
                asked: false,
            },
            None => bail!("--user {name}: no such user"),
        };
        Ok(Some(identity))
    }

    /// Becomes that user in every thread (the C library's setuid sets all
    /// of them): supplementary groups cleared, then the gid, then the uid
    /// (real, effective and saved), which also clears every capability
    /// set but the bounding set (`drop_all_but` has emptied that).
    ///
    /// Only a user named by --user is an error to fail to become: the
    /// default may not exist where root is a user namespace's (`unshare
    /// -r` maps uid 0 alone), and the run then says so and stays root.
    pub(crate) fn assume(&self) -> anyhow::Result<()> {
        match self.switch() {
            Err(e) if !self.asked => {
                crate::stderr::say!(
                    "icmpmon: {e:#}: staying root's uid, without a capability (--user names another user)"
                );
                Ok(())
            }
            r => r,
        }
    }

    fn switch(&self) -> anyhow::Result<()> {
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

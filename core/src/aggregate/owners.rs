//! Who got hurt: the local processes that own the flows ICMP errors quote
//! (and the sockets echo requests leave from). The binary's attribution
//! thread finds the owner (sock_diag, /proc); this module only counts what
//! it is told, in a bounded table keyed by the owner's unit or command.

use std::borrow::Cow;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use foldhash::fast::RandomState;
use lru::LruCache;
use serde::Serialize;

use super::flow::{FlowKey, KindCounts};
use crate::event::IcmpEvent;

/// The process holding a socket, as /proc showed it at lookup time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
    pub uid: u32,
    /// The cgroup v2 path (`/system.slice/nginx.service`), "" if unknown.
    pub cgroup: String,
}

impl Owner {
    /// The systemd unit or container the cgroup path names, if any.
    pub fn unit(&self) -> Option<String> {
        cgroup_unit(&self.cgroup)
    }

    /// `comm[pid]`, and the unit or container when the cgroup names one.
    pub fn label(&self) -> String {
        match self.unit() {
            Some(u) => format!("{}[{}] {u}", self.comm, self.pid),
            None => format!("{}[{}]", self.comm, self.pid),
        }
    }
}

/// What a lookup found for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribution {
    Owner(Arc<Owner>),
    /// A socket matched, but no process holds it any more (it exited, or
    /// lives in another mount/pid namespace).
    Gone,
    /// A socket matched, but icmpmon may not read the processes' fd lists
    /// (another user's, without CAP_SYS_PTRACE): the owner is hidden.
    Hidden,
    /// No socket of this namespace matches the flow (it was closed, or the
    /// flow is not local: forwarded, spoofed, another namespace's).
    NoSocket,
    /// Not looked up: the lookup queue was full or the answer came too
    /// late. Counted, never guessed.
    Skipped,
}

/// Attribution outcomes of the run, one count per message asked about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AttributionTotals {
    pub asked: u64,
    pub owner: u64,
    pub gone: u64,
    pub hidden: u64,
    pub no_socket: u64,
    pub skipped: u64,
}

impl AttributionTotals {
    fn add(&mut self, a: &Attribution) {
        self.asked += 1;
        match a {
            Attribution::Owner(_) => self.owner += 1,
            Attribution::Gone => self.gone += 1,
            Attribution::Hidden => self.hidden += 1,
            Attribution::NoSocket => self.no_socket += 1,
            Attribution::Skipped => self.skipped += 1,
        }
    }
}

/// The path of a /proc/PID/cgroup text: the unified (v2) line when it says
/// more than `/`, else systemd's v1 hierarchy, else the first v1 path.
/// Paths are relative to icmpmon's own cgroup namespace.
pub fn cgroup_path(text: &str) -> String {
    let lines: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            Some((ctl, path))
        })
        .collect();
    let pick = |want: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .find(|(c, p)| want(c) && *p != "/")
            .map(|(_, p)| p.to_string())
    };
    pick(&|c| c.is_empty())
        .or_else(|| pick(&|c| c == "name=systemd"))
        .or_else(|| pick(&|_| true))
        .unwrap_or_else(|| lines.first().map_or(String::new(), |(_, p)| p.to_string()))
}

/// The unit or container a cgroup path names: a container id (docker,
/// containerd, cri-o, podman; shortened to 12 characters), a Kubernetes pod
/// (under `kubepods`), else the innermost systemd `.service` or `.scope`.
pub fn cgroup_unit(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let hex = |s: &str| s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit());
    for p in parts.iter().rev() {
        let inner = p.strip_suffix(".scope").unwrap_or(p);
        for (prefix, runtime) in [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("libpod-", "podman"),
        ] {
            if let Some(id) = inner.strip_prefix(prefix).filter(|id| hex(id)) {
                return Some(format!("{runtime}:{}", &id[..12]));
            }
        }
    }
    // cgroupfs drivers: /docker/<id>, /kubepods/<class>/pod<uid>/<id>.
    // kubepods anywhere: kubelet's --cgroup-root may put it under a slice.
    let kube = parts.iter().any(|p| p.contains("kubepods"));
    for w in parts.windows(2) {
        if matches!(w[0], "docker" | "containerd" | "libpod_parent") && hex(w[1]) {
            return Some(format!("{}:{}", w[0], &w[1][..12]));
        }
        if kube && w[0].starts_with("pod") && hex(w[1]) {
            return Some(format!("container:{}", &w[1][..12]));
        }
    }
    if kube {
        let pod = parts.iter().rev().find_map(|p| {
            let p = p.strip_suffix(".slice").unwrap_or(p);
            p.rsplit_once("-pod")
                .map(|(_, id)| id)
                .or_else(|| p.strip_prefix("pod"))
                .filter(|id| id.len() >= 8)
        });
        if let Some(pod) = pod {
            return Some(format!("pod:{}", pod.replace('_', "-")));
        }
    }
    parts
        .iter()
        .rev()
        .find(|p| p.ends_with(".service") || p.ends_with(".scope"))
        .map(|p| p.to_string())
}

/// Errors that hit one owner (a unit, a container, or a command).
#[derive(Debug, Clone, Default)]
pub struct Hurt {
    pub errors: u64,
    pub kinds: KindCounts,
    /// The last process, flow and reporter.
    pub owner: Option<Arc<Owner>>,
    pub last_flow: Option<FlowKey>,
    pub last_reporter: Option<IpAddr>,
    pub last_ns: u64,
}

/// One row of "who got hurt".
#[derive(Debug, Clone, Serialize)]
pub struct HurtRow {
    /// The unit or container, else the command.
    pub who: String,
    pub pid: u32,
    pub comm: String,
    pub uid: u32,
    pub cgroup: String,
    pub errors: u64,
    pub kinds: Vec<(Cow<'static, str>, u64)>,
    pub last_flow: Option<FlowKey>,
    pub last_reporter: Option<IpAddr>,
    pub last_ns: u64,
}

/// Errors per owner, bounded (least recently hurt forgotten first), and
/// the outcome of every lookup.
#[derive(Debug)]
pub struct OwnerTracker {
    hurt: LruCache<String, Hurt, RandomState>,
    pub totals: AttributionTotals,
}

impl OwnerTracker {
    pub fn new(max: usize) -> Self {
        Self {
            hurt: LruCache::with_hasher(
                NonZeroUsize::new(max.max(1)).expect("max(1)"),
                RandomState::default(),
            ),
            totals: AttributionTotals::default(),
        }
    }

    /// What the lookup for `ev` found; errors with an owner count against it.
    pub fn attributed(&mut self, ev: &IcmpEvent, a: &Attribution, error: bool) {
        self.totals.add(a);
        let Attribution::Owner(o) = a else { return };
        if !error {
            return;
        }
        let who = o.unit().unwrap_or_else(|| o.comm.clone());
        let h = self.hurt.get_or_insert_mut(who, Hurt::default);
        h.errors += 1;
        h.kinds.add((ev.family, ev.icmp_type, ev.icmp_code));
        h.owner = Some(o.clone());
        h.last_flow = ev.quoted.as_ref().map(FlowKey::from);
        h.last_reporter = Some(ev.src);
        h.last_ns = h.last_ns.max(ev.ts_ns);
    }

    /// The `n` owners with the most errors.
    pub fn top(&self, n: usize) -> Vec<HurtRow> {
        let mut v: Vec<_> = self.hurt.iter().collect();
        v.sort_by(|a, b| {
            b.1.errors
                .cmp(&a.1.errors)
                .then(b.1.last_ns.cmp(&a.1.last_ns))
        });
        v.into_iter()
            .take(n)
            .map(|(who, h)| {
                let o = h.owner.as_deref();
                HurtRow {
                    who: who.clone(),
                    pid: o.map_or(0, |o| o.pid),
                    comm: o.map_or_else(String::new, |o| o.comm.clone()),
                    uid: o.map_or(0, |o| o.uid),
                    cgroup: o.map_or_else(String::new, |o| o.cgroup.clone()),
                    errors: h.errors,
                    kinds: h.kinds.named(),
                    last_flow: h.last_flow,
                    last_reporter: h.last_reporter,
                    last_ns: h.last_ns,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_name_their_unit_or_container() {
        let cases = [
            ("/system.slice/nginx.service", Some("nginx.service")),
            ("/user.slice/user-0.slice/session-3.scope", Some("session-3.scope")),
            (
                "/system.slice/docker-3f4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f.scope",
                Some("docker:3f4e5a6b7c8d"),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7a8b.slice/cri-containerd-aabbccddeeff00112233.scope",
                Some("containerd:aabbccddeeff"),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b2c3d4e_5f60_7a8b.slice",
                Some("pod:1b2c3d4e-5f60-7a8b"),
            ),
            ("/docker/0123456789abcdef0123", Some("docker:0123456789ab")),
            ("/machine.slice/libpod-0123456789abcdef.scope/container", Some("podman:0123456789ab")),
            ("/system.slice/podman.service", Some("podman.service")),
            ("/user.slice/user-1000.slice/user@1000.service/app.slice/podman-1234.scope", Some("podman-1234.scope")),
            ("/kubepods/burstable/pod1b2c3d4e-5f60-7a8b/0123456789abcdef0123", Some("container:0123456789ab")),
            ("/kubepods/besteffort/pod1b2c3d4e-5f60-7a8b", Some("pod:1b2c3d4e-5f60-7a8b")),
            ("/icmpmon-test", None),
            ("/", None),
            ("", None),
        ];
        for (path, unit) in cases {
            assert_eq!(cgroup_unit(path).as_deref(), unit, "{path}");
        }
    }

    #[test]
    fn cgroup_files_v2_hybrid_and_v1() {
        assert_eq!(
            cgroup_path("0::/system.slice/nginx.service\n"),
            "/system.slice/nginx.service"
        );
        let hybrid = "12:pids:/\n1:name=systemd:/user.slice/session-2.scope\n0::/icmpmon-test\n";
        assert_eq!(cgroup_path(hybrid), "/icmpmon-test");
        let hybrid_root = "12:pids:/\n1:name=systemd:/user.slice/session-2.scope\n0::/\n";
        assert_eq!(cgroup_path(hybrid_root), "/user.slice/session-2.scope");
        assert_eq!(cgroup_path("0::/\n"), "/");
        assert_eq!(cgroup_path(""), "");
    }
}

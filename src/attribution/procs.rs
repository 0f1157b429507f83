//! From a socket inode to the process holding it: every /proc/PID/fd is
//! read once into an inode → pid map (the way ss -p and RustNet do), and
//! read again when an inode is missing from it, at most every
//! `RESCAN_EVERY` (a lookup then waits for the next scan: a process is
//! called gone only when a scan made after its socket was found misses it).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use icmpmon_core::aggregate::Owner;

/// A socket missing from the map makes a new scan, at most this often (a
/// scan reads every process's fd directory).
const RESCAN_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub(crate) struct Processes {
    by_inode: HashMap<u64, u32>,
    scanned: Option<Instant>,
    /// Processes whose fd list the last scan could not read.
    denied: usize,
    pub scans: u64,
}

impl Processes {
    /// The process holding socket `inode`, found at `found` (in the pid
    /// namespace icmpmon sees).
    pub fn owner(&mut self, inode: u64, found: Instant) -> Option<Owner> {
        if inode == 0 {
            return None;
        }
        if !self.by_inode.contains_key(&inode) && self.scanned.is_none_or(|t| t < found) {
            if let Some(t) = self.scanned {
                std::thread::sleep((t + RESCAN_EVERY).saturating_duration_since(Instant::now()));
            }
            self.scan();
        }
        let pid = *self.by_inode.get(&inode)?;
        if let Some(o) = process(pid) {
            return Some(o);
        }
        // It exited since that scan; another process (a forked child) may
        // hold the socket still: only a scan made after the socket was found
        // can tell.
        self.by_inode.remove(&inode);
        if self.scanned.is_some_and(|t| t < found) {
            return self.owner(inode, found);
        }
        None
    }

    /// Whether the last scan missed processes it may not read: a socket
    /// without a process may belong to one of them.
    pub fn hidden(&self) -> bool {
        self.denied > 0
    }

    fn scan(&mut self) {
        self.scans += 1;
        self.scanned = Some(Instant::now());
        self.by_inode.clear();
        self.denied = 0;
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let fds = match std::fs::read_dir(p.path().join("fd")) {
                Ok(fds) => fds,
                Err(e) => {
                    self.denied += usize::from(e.kind() == std::io::ErrorKind::PermissionDenied);
                    continue;
                }
            };
            for fd in fds.flatten() {
                match std::fs::read_link(fd.path()) {
                    Ok(l) => {
                        if let Some(inode) = socket_inode(&l) {
                            // Shared sockets (fork): the first pid keeps it.
                            self.by_inode.entry(inode).or_insert(pid);
                        }
                    }
                    // The directory lists, its links do not (ptrace rules).
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        self.denied += 1;
                        break;
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Name, uid and cgroup of a live process.
pub(crate) fn process(pid: u32) -> Option<Owner> {
    let dir = format!("/proc/{pid}");
    let comm = std::fs::read_to_string(format!("{dir}/comm")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX);
    let cgroup = std::fs::read_to_string(format!("{dir}/cgroup"))
        .map(|t| icmpmon_core::aggregate::cgroup_path(&t))
        .unwrap_or_default();
    Some(Owner {
        pid,
        comm: comm.trim_end().to_string(),
        uid,
        cgroup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_by_its_socket() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", s.as_raw_fd())).unwrap();
        let inode = socket_inode(&link).unwrap();
        let o = Processes::default().owner(inode, Instant::now()).unwrap();
        assert_eq!(o.pid, std::process::id());
        assert!(!o.comm.is_empty());
        assert_eq!(Processes::default().owner(0, Instant::now()), None);
    }
}

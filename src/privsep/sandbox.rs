//! The seccomp filter of the process that parses packets, applied to all
//! its threads (TSYNC) once its source is open, its outputs are open and
//! its capabilities are gone. An allowlist: what the capture, aggregator,
//! output, metrics and dashboard threads call, and nothing else; any other
//! system call fails with EPERM (an error the code reports, rather than a
//! SIGSYS with no message).
//!
//! Built with `seccompiler` (rust-vmm's, Firecracker's): pure Rust, so
//! there is no libseccomp to install or link, and arguments can be
//! compared, which narrows the broad calls:
//!
//! - no exec, no new process (`clone` only with CLONE_THREAD; `clone3`,
//!   whose flags a filter cannot read, answers ENOSYS so that the C
//!   library falls back to `clone`), no ptrace, no module or mount calls;
//! - no new socket (`socket`, `connect`, `bind` are absent: every socket
//!   is made before), no `bpf` but reading a map or an object's
//!   information (the BPF source's counters and ring buffers), `ioctl` only for the terminal and non-blocking I/O,
//!   `fcntl` only for descriptor and status flags, no write, send or copy
//!   of the source's AF_PACKET socket (frames could be injected through
//!   it) and no `sendmsg` (which could pass it on),
//!   `kill` only for the helpers' pids (a stuck helper is killed), `prctl`
//!   only to name a thread (or set no_new_privs);
//! - `openat` stays, without arguments checked: the kernel counters are
//!   read from /proc each second and, without a files helper, SIGHUP
//!   reopens the output files and rereads the config file here. With no
//!   capability left, the kernel's permission checks on the files are the
//!   uid's own: started as root, the monitor is `icmpmon` or `nobody` by
//!   then (`identity`); otherwise the user it was started as (the packaged
//!   service's dynamic user). That is the allowance, and the reason for
//!   it (docs/security.md).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SandboxError {
    #[error("cannot build the seccomp filter")]
    Build(#[from] seccompiler::BackendError),
    #[error("cannot apply the seccomp filter")]
    Apply(#[from] seccompiler::Error),
}

/// System calls allowed whatever their arguments.
const ALLOWED: &[libc::c_long] = &[
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    // Threads, their stacks and their waits.
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sigaltstack,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_getrandom,
    libc::SYS_capget,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_uname,
    libc::SYS_wait4,
    // Time.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    // Files that are open, and opening one (see above). Writes: below.
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_openat,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
    // Waiting on them.
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    // Sockets that are open: capture, netlink, the metrics listener and
    // its connections, the helpers'.
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_recvmmsg,
    libc::SYS_accept4,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
];

/// Older calls that x86_64 has and arm64 does not.
#[cfg(target_arch = "x86_64")]
const ALLOWED_X86_64: &[libc::c_long] = &[
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_wait,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_open,
    libc::SYS_readlink,
    libc::SYS_access,
    libc::SYS_pipe,
    libc::SYS_accept,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[libc::c_long] = &[];

#[cfg(target_arch = "x86_64")]
const DUPS_X86_64: &[libc::c_long] = &[libc::SYS_dup2];
#[cfg(not(target_arch = "x86_64"))]
const DUPS_X86_64: &[libc::c_long] = &[];

/// The terminal's requests (the dashboard) and non-blocking I/O. (The
/// constants' type differs between C libraries: the casts are for musl.)
#[allow(clippy::unnecessary_cast)]
const IOCTLS: &[u64] = &[
    libc::TCGETS as u64,
    libc::TCSETS as u64,
    libc::TCSETSW as u64,
    libc::TCSETSF as u64,
    // termios2, which rustix (under crossterm) uses.
    libc::TCGETS2 as u64,
    libc::TCSETS2 as u64,
    libc::TCSETSW2 as u64,
    libc::TCSETSF2 as u64,
    libc::TIOCGWINSZ as u64,
    libc::FIONBIO as u64,
    libc::FIONREAD as u64,
    libc::FIOCLEX as u64,
    // An interface's name by its index (rows' ifname), on a socket made
    // before the filter.
    libc::SIOCGIFNAME as u64,
];

/// What `fcntl` may do: descriptor and status flags (no F_SETOWN/F_SETSIG,
/// which would let SIGIO signal any process); a copy (F_DUPFD_CLOEXEC) is
/// a `DUPS` call.
const FCNTLS: &[u64] = &[
    libc::F_GETFD as u64,
    libc::F_SETFD as u64,
    libc::F_GETFL as u64,
    libc::F_SETFL as u64,
];

/// What writes, sends or copies a descriptor: allowed on any descriptor
/// but the source's `senders` (an AF_PACKET socket, which would put frames
/// on the wire without CAP_NET_RAW: the kernel checks it only when the
/// socket is made). A copy would be a sender under another number, so
/// copies of one are refused too; and `sendmsg`, which could pass one
/// (SCM_RIGHTS) to a socket this process reads, is not allowed at all
/// (every send after set-up is a `sendto` or a `write`).
const WRITES: &[libc::c_long] = &[libc::SYS_write, libc::SYS_writev, libc::SYS_sendto];
const DUPS: &[libc::c_long] = &[libc::SYS_dup, libc::SYS_dup3];

/// The BPF source's counters (a map lookup) and its ring buffers, whose
/// reader asks the size of a map it holds.
const BPF_COMMANDS: &[u64] = &[
    1,  // BPF_MAP_LOOKUP_ELEM
    15, // BPF_OBJ_GET_INFO_BY_FD
];

fn arg_is(index: u8, len: Len, value: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(index, len, Op::Eq, value)?])
}

/// One rule per value: argument `index` (its low 32 bits) is any of them.
fn any_of(index: u8, values: &[u64]) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    values
        .iter()
        .map(|&v| arg_is(index, Len::Dword, v))
        .collect()
}

/// The filter: `helpers` are the pids `kill` may signal; `senders` the
/// descriptors nothing may be written to.
fn program(helpers: &[u32], senders: &[i32]) -> Result<BpfProgram, SandboxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .chain(ALLOWED_X86_64)
        .map(|&n| (n, Vec::new()))
        .collect();
    let clone_thread = SeccompRule::new(vec![SeccompCondition::new(
        0,
        Len::Qword,
        Op::MaskedEq(libc::CLONE_THREAD as u64),
        libc::CLONE_THREAD as u64,
    )?])?;
    rules.insert(libc::SYS_clone, vec![clone_thread]);
    // arg0 is none of the senders (with `more` conditions, if any).
    let not_a_sender = |more: Vec<SeccompCondition>| -> Result<SeccompRule, SandboxError> {
        let mut conditions = more;
        for &fd in senders {
            conditions.push(SeccompCondition::new(0, Len::Dword, Op::Ne, fd as u64)?);
        }
        Ok(SeccompRule::new(conditions)?)
    };
    let mut fcntl = any_of(1, FCNTLS)?;
    fcntl.push(not_a_sender(vec![SeccompCondition::new(
        1,
        Len::Dword,
        Op::Eq,
        libc::F_DUPFD_CLOEXEC as u64,
    )?])?);
    rules.insert(libc::SYS_fcntl, fcntl);
    for &call in WRITES.iter().chain(DUPS).chain(DUPS_X86_64) {
        let rule = if senders.is_empty() {
            Vec::new()
        } else {
            vec![not_a_sender(Vec::new())?]
        };
        rules.insert(call, rule);
    }
    rules.insert(libc::SYS_ioctl, any_of(1, IOCTLS)?);
    rules.insert(libc::SYS_bpf, any_of(0, BPF_COMMANDS)?);
    // Naming a thread; no_new_privs, which applying a filter sets again.
    rules.insert(
        libc::SYS_prctl,
        vec![
            arg_is(0, Len::Dword, libc::PR_SET_NAME as u64)?,
            arg_is(0, Len::Dword, libc::PR_SET_NO_NEW_PRIVS as u64)?,
        ],
    );
    // Adding a filter, which can only take more away: the clone3 one
    // below is installed after this one.
    rules.insert(
        libc::SYS_seccomp,
        vec![arg_is(0, Len::Dword, libc::SECCOMP_SET_MODE_FILTER as u64)?],
    );
    // tgkill(own pid, ...): abort() raising SIGABRT on a panic.
    let own = u64::from(std::process::id());
    rules.insert(libc::SYS_tgkill, vec![arg_is(0, Len::Dword, own)?]);
    if !helpers.is_empty() {
        let pids: Vec<u64> = helpers.iter().map(|&p| u64::from(p)).collect();
        rules.insert(libc::SYS_kill, any_of(0, &pids)?);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch(),
    )?;
    Ok(filter.try_into()?)
}

/// clone3 answers ENOSYS: of two filters' errors the kernel returns the
/// later one's, so this one, installed second, overrides the allowlist's
/// EPERM for it alone.
fn clone3_program() -> Result<BpfProgram, SandboxError> {
    let filter = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch(),
    )?;
    Ok(filter.try_into()?)
}

fn arch() -> seccompiler::TargetArch {
    #[cfg(target_arch = "x86_64")]
    return seccompiler::TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    return seccompiler::TargetArch::aarch64;
    #[cfg(target_arch = "riscv64")]
    return seccompiler::TargetArch::riscv64;
}

/// Applies the filter to every thread of this process (and those it
/// starts later); sets no_new_privs. Irreversible.
pub(crate) fn apply(helpers: &[u32], senders: &[i32]) -> Result<(), SandboxError> {
    let allow = program(helpers, senders)?;
    let clone3 = clone3_program()?;
    seccompiler::apply_filter_all_threads(&allow)?;
    seccompiler::apply_filter_all_threads(&clone3)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What the filter must never let through, whatever else is added to
    /// its allowlist.
    const REFUSED: &[libc::c_long] = &[
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_setuid,
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_capset,
        libc::SYS_kexec_load,
        libc::SYS_perf_event_open,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_getfd,
        libc::SYS_sendmsg,
        libc::SYS_sendmmsg,
    ];

    #[test]
    fn the_allowlist_holds_none_of_the_refused_calls() {
        for n in REFUSED {
            assert!(
                !ALLOWED.contains(n) && !ALLOWED_X86_64.contains(n),
                "system call {n} is allowed"
            );
            assert!(
                ![
                    libc::SYS_clone,
                    libc::SYS_fcntl,
                    libc::SYS_ioctl,
                    libc::SYS_bpf,
                    libc::SYS_prctl,
                    libc::SYS_seccomp,
                    libc::SYS_tgkill,
                    libc::SYS_kill
                ]
                .contains(n),
                "system call {n} is allowed with arguments"
            );
        }
    }

    /// Run in a child process (the filter cannot be taken off again): under
    /// the filter, threads start and files open, but no program runs, no
    /// process is forked and no socket is made.
    #[test]
    fn under_the_filter_no_exec_fork_or_socket() {
        const CHILD: &str = "ICMPMON_SANDBOX_CHILD";
        const NAME: &str = "privsep::sandbox::tests::under_the_filter_no_exec_fork_or_socket";
        if std::env::var_os(CHILD).is_some() {
            let (guarded, other) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::DGRAM,
                rustix::net::SocketFlags::empty(),
                None,
            )
            .expect("a socketpair");
            use std::os::fd::AsRawFd;
            apply(&[], &[guarded.as_raw_fd()]).expect("applies");
            // The guarded end takes no write; the other end does.
            let to_guarded = rustix::io::write(&guarded, b"x").is_ok();
            let to_other = rustix::io::write(&other, b"x").is_ok();
            let dup_guarded = rustix::io::dup(&guarded).is_ok()
                || rustix::io::fcntl_dupfd_cloexec(&guarded, 0).is_ok();
            let dup_other = rustix::io::dup(&other).is_ok()
                && rustix::io::fcntl_dupfd_cloexec(&other, 0).is_ok();
            // After libtest's "test NAME ... " on the same line.
            println!();
            let thread = std::thread::spawn(|| 7).join();
            println!("thread {:?}", thread.ok());
            println!(
                "open {}",
                std::fs::read_to_string("/proc/self/status").is_ok()
            );
            println!("exec {}", Command::new("/bin/true").status().is_ok());
            println!("udp {}", std::net::UdpSocket::bind("127.0.0.1:0").is_ok());
            println!(
                "tcp {}",
                std::net::TcpStream::connect("127.0.0.1:9").is_ok()
            );
            let pair = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::STREAM,
                rustix::net::SocketFlags::empty(),
                None,
            );
            println!("socketpair {}", pair.is_ok());
            println!("write guarded {to_guarded} other {to_other}");
            println!("dup guarded {dup_guarded} other {dup_other}");
            println!("getfl {}", rustix::fs::fcntl_getfl(&other).is_ok());
            return;
        }
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in [
            "thread Some(7)",
            "open true",
            "exec false",
            "udp false",
            "tcp false",
            "socketpair false",
            "write guarded false other true",
            "dup guarded false other true",
            "getfl true",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from the child's output:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

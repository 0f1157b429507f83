//! Privilege separation, in the manner of OpenSSH's privsep and `tcpdump
//! -Z`: the process that parses packets keeps no capability once its
//! source is open, nor root's uid (`identity`), and runs under `sandbox`'s
//! seccomp filter; what needs a capability (or root's uid) later runs in a
//! small helper process of its own, started before the drop, which keeps
//! only that and answers fixed-size requests over a SOCK_SEQPACKET
//! socketpair. Each side treats the other's messages as untrusted.
//!
//! A helper is this same binary run again (`/proc/self/exe`, so a fresh
//! address space, not a fork of a multithreaded one) with `HELPER_FLAG` and
//! its role; the socket is its standard input. It ends when the monitor's
//! end of the socket closes, whichever way the monitor ends (even killed),
//! and ignores the terminal's and the service manager's signals meanwhile.

pub(crate) mod files;
pub(crate) mod identity;
pub(crate) mod rules;
pub(crate) mod sandbox;
mod socket;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use icmpmon_capture::privilege::{self, Capability};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::stderr::say;
use socket::{receive, receive_with_fds, send, send_with_fd};

/// argv[1] of a helper: not an option of the command line (clap never sees
/// it), and refused unless standard input is a helper's socket.
pub(crate) const HELPER_FLAG: &str = "--privsep-helper";

/// What a helper does, and the capabilities it keeps for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Names the process behind a socket: lists other users'
    /// /proc/PID/fd (CAP_DAC_READ_SEARCH) and reads their links
    /// (CAP_SYS_PTRACE; also what shows them under hidepid).
    Attribution,
    /// Acts for a source with firewall rules (`rules`): sends NFQUEUE
    /// verdicts and NFLOG configuration (the kernel checks CAP_NET_ADMIN
    /// in the sending task) and removes the rules (nft, iptables: also
    /// CAP_NET_RAW), at the end or when the monitor goes away.
    Rules,
    /// Opens the files the monitor reopens on SIGHUP (`files`), once the
    /// monitor has given root's uid up: root's uid, and CAP_DAC_OVERRIDE
    /// to open them where the first open could.
    Files,
}

impl Role {
    const ALL: [Role; 3] = [Role::Attribution, Role::Rules, Role::Files];

    fn name(self) -> &'static str {
        match self {
            Role::Attribution => "attribution",
            Role::Rules => "rules",
            Role::Files => "files",
        }
    }

    /// Its command name in ps and top (run as /proc/self/exe, it would be
    /// "exe"): at most 15 bytes.
    fn comm(self) -> &'static std::ffi::CStr {
        match self {
            Role::Attribution => c"icmpmon-attrib",
            Role::Rules => c"icmpmon-rules",
            Role::Files => c"icmpmon-files",
        }
    }

    pub(crate) fn capabilities(self) -> &'static [Capability] {
        match self {
            Role::Attribution => &[Capability::CAP_DAC_READ_SEARCH, Capability::CAP_SYS_PTRACE],
            Role::Rules => icmpmon_capture::rules::CAPABILITIES,
            Role::Files => &[Capability::CAP_DAC_OVERRIDE],
        }
    }
}

/// The monitor's end of a running helper.
#[derive(Debug)]
pub(crate) struct Helper {
    role: Role,
    sock: Option<OwnedFd>,
    child: Child,
}

impl Helper {
    /// Starts a helper for `role`. Called while the process still holds
    /// its capabilities: those of the role are raised into the ambient set
    /// first, so that they survive the exec when icmpmon is not uid 0 (a
    /// service given ambient capabilities). The run's drop clears them.
    pub(crate) fn spawn(role: Role) -> io::Result<Self> {
        if let Err(e) = privilege::pass_to_children(role.capabilities()) {
            tracing::warn!(
                "cannot pass capabilities to the {} helper: {e}",
                role.name()
            );
        }
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        // The helper checks that its parent runs this binary: a process
        // with file capabilities is not dumpable, and would hide that from
        // it. Dumpable again until the helper has greeted (what else could
        // look needs the capabilities this process holds, or CAP_SYS_PTRACE).
        let dumpable = rustix::process::dumpable_behavior().ok();
        if dumpable != Some(rustix::process::DumpableBehavior::Dumpable) {
            let _ =
                rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable);
        }
        let child = Command::new("/proc/self/exe")
            .arg0("icmpmon")
            .args([HELPER_FLAG, role.name()])
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            // Out of the terminal's process group: Ctrl-C stops the monitor,
            // which then closes the socket.
            .process_group(0)
            .spawn();
        let helper = child.and_then(|child| {
            let mut h = Self {
                role,
                sock: Some(ours),
                child,
            };
            h.greet()?;
            Ok(h)
        });
        if let Some(d) = dumpable.filter(|d| *d != rustix::process::DumpableBehavior::Dumpable) {
            let _ = rustix::process::set_dumpable_behavior(d);
        }
        helper
    }

    /// The helper's first message is a random challenge, sent once it has
    /// checked its parent; answered, it serves. (A request queued before
    /// it, by a program that then ran icmpmon, cannot carry it.) A helper
    /// that refused is reaped (`Drop`) and this fails.
    fn greet(&mut self) -> io::Result<()> {
        let sock = self.sock.as_ref().ok_or(io::ErrorKind::NotConnected)?;
        let mut challenge = [0u8; CHALLENGE];
        match receive(sock, &mut challenge, Duration::from_secs(10))? {
            (CHALLENGE, None) => send(sock, &challenge),
            _ => Err(io::ErrorKind::InvalidData.into()),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the first message, with a copy of `fd` (SCM_RIGHTS).
    pub(crate) fn hand(&mut self, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
        let sock = self.sock.as_ref().ok_or(io::ErrorKind::NotConnected)?;
        send_with_fd(sock, bytes, fd)
    }

    /// Sends one request (or a first message without a descriptor) whose
    /// answer `next_answer` reads. After an error the socket is closed.
    pub(crate) fn post(&mut self, request: &[u8]) -> io::Result<()> {
        let sock = self.sock.as_ref().ok_or(io::ErrorKind::NotConnected)?;
        let result = send(sock, request);
        if result.is_err() {
            self.sock = None;
        }
        result
    }

    /// Reads the next answer into `answer`, waiting up to `wait`: its
    /// length, and the descriptor it carries, if one. After any error the
    /// socket is closed (an answer still on its way must never be read as
    /// the next one's): the helper, seeing it closed, ends (the rules
    /// helper after removing what it holds), and later calls fail at once.
    pub(crate) fn next_answer(
        &mut self,
        answer: &mut [u8],
        wait: Duration,
    ) -> io::Result<(usize, Option<OwnedFd>)> {
        let sock = self.sock.as_ref().ok_or(io::ErrorKind::NotConnected)?;
        let result = receive(sock, answer, wait);
        if result.is_err() {
            self.sock = None;
        }
        result
    }

    /// Closes the socket: the helper ends, and later calls fail at once.
    pub(crate) fn hang_up(&mut self) {
        self.sock = None;
    }

    /// Whether an answer (or the helper's end) is waiting to be read.
    pub(crate) fn answered(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let Some(sock) = &self.sock else {
            return true;
        };
        let mut fds = [PollFd::new(sock, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(n) if n > 0)
    }

    /// One request and its answer (`post`, then `next_answer`).
    pub(crate) fn call(
        &mut self,
        request: &[u8],
        answer: &mut [u8],
        wait: Duration,
    ) -> io::Result<(usize, Option<OwnedFd>)> {
        self.post(request)?;
        self.next_answer(answer, wait)
    }

    /// Why it stopped answering, for the one message that says so: its
    /// exit status once it has ended (it is killed first if it is stuck).
    pub(crate) fn ended(&mut self, why: &io::Error) -> String {
        let status = self
            .reap(Duration::ZERO)
            .map_or_else(|| "status unknown".to_string(), |s| s.to_string());
        format!(
            "the {} helper (pid {}) stopped answering ({why}; {status})",
            self.role.name(),
            self.child.id()
        )
    }

    /// Closes the socket, which ends the helper, and reaps it: killed if
    /// it has not ended within `grace` (stuck).
    fn reap(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.sock = None;
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Err(_) => return None,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => break,
            }
        }
        // Refused when the monitor has given root's uid up (`identity`):
        // it then ends on its own, after its current lookup.
        self.child.kill().ok()?;
        self.child.wait().ok()
    }
}

/// The length of the helper's challenge.
const CHALLENGE: usize = 16;

impl Drop for Helper {
    /// Closes the socket, which ends the helper, and reaps it (killed if it
    /// has not ended within a second: stuck in a scan).
    fn drop(&mut self) {
        self.reap(Duration::from_secs(1));
    }
}

/// The helper's side of its socket: standard input, which must be a
/// SOCK_SEQPACKET socket (run by hand, it is not).
#[derive(Debug)]
pub(crate) struct Served {
    sock: OwnedFd,
    /// The signals it disregards, for as long as it serves.
    _signals: Option<signal_hook::iterator::Signals>,
}

impl Served {
    /// Receives one request of exactly `len` bytes into `buf`; `None` once
    /// the monitor has gone. A request of another length ends the helper.
    pub(crate) fn next<'b>(&self, buf: &'b mut [u8], len: usize) -> Option<&'b [u8]> {
        let (n, full) = rustix::net::recv(&self.sock, &mut *buf, RecvFlags::TRUNC).ok()?;
        (n == len && full == len).then_some(&buf[..len])
    }

    /// Receives the first message, of exactly `len` bytes, with the one
    /// descriptor it carries; `None` for anything else.
    pub(crate) fn first_with_fd(&self, len: usize) -> Option<(Vec<u8>, OwnedFd)> {
        let mut buf = vec![0u8; len + 1];
        let (n, mut fds) = receive_with_fds(&self.sock, &mut buf, RecvFlags::empty()).ok()?;
        (n == len && fds.len() == 1).then(|| {
            buf.truncate(len);
            (buf, fds.remove(0))
        })
    }

    /// Receives the first message, of at most `max` bytes and with no
    /// descriptor; `None` for anything else.
    pub(crate) fn first(&self, max: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; max + 1];
        let (n, fds) = receive_with_fds(&self.sock, &mut buf, RecvFlags::empty()).ok()?;
        (n <= max && fds.is_empty()).then(|| {
            buf.truncate(n);
            buf
        })
    }

    /// Answers with `bytes` and a copy of `fd`.
    pub(crate) fn answer_with_fd(&self, bytes: &[u8], fd: OwnedFd) -> bool {
        send_with_fd(&self.sock, bytes, fd.as_fd()).is_ok()
    }

    pub(crate) fn answer(&self, bytes: &[u8]) -> bool {
        rustix::net::send(&self.sock, bytes, SendFlags::NOSIGNAL).is_ok()
    }
}

/// When argv[1] is `HELPER_FLAG`, this process is a helper: its role and
/// its socket, with the role's capabilities kept and the rest dropped
/// (`Err`: the exit status of a helper that cannot serve). `None`: it is
/// not a helper.
pub(crate) fn as_helper(args: &[std::ffi::OsString]) -> Option<Result<(Role, Served), ExitCode>> {
    if args.get(1).and_then(|a| a.to_str()) != Some(HELPER_FLAG) {
        return None;
    }
    let Some(role) = Role::ALL
        .into_iter()
        .find(|r| args.get(2).and_then(|a| a.to_str()) == Some(r.name()))
    else {
        return Some(Err(not_by_hand()));
    };
    let sock = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(s) if rustix::net::sockopt::socket_type(&s).ok() == Some(SocketType::SEQPACKET) => s,
        _ => return Some(Err(not_by_hand())),
    };
    if !from_monitor(&sock) || !challenged(&sock) {
        return Some(Err(not_by_hand()));
    }
    // Caught and left unread: the helper ends when the monitor closes the
    // socket, not when the terminal or the service manager signals the
    // whole group (the monitor may still be asking as it drains).
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]);
    let _ = rustix::thread::set_name(role.comm());
    // Only the rules helper runs programs (nft, iptables) that need them.
    let kept = match role {
        Role::Rules => privilege::Kept::AndChildren,
        Role::Attribution | Role::Files => privilege::Kept::Here,
    };
    if let Err(e) = privilege::drop_all_but(role.capabilities(), kept) {
        say!(
            "icmpmon: {} helper: cannot drop capabilities: {e}",
            role.name()
        );
        return Some(Err(ExitCode::FAILURE));
    }
    Some(Ok((
        role,
        Served {
            sock,
            _signals: signals.ok(),
        },
    )))
}

/// Whether the other end of `sock` is this process's parent running this
/// same binary: a helper keeps capabilities (from root, or from the
/// binary's file capabilities), so one started by anything but icmpmon,
/// with a handoff of someone's making, must not serve. (The monitor makes
/// itself dumpable while it starts a helper, so that its exe can be read.)
fn from_monitor(sock: &OwnedFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(peer) = rustix::net::sockopt::socket_peercred(sock) else {
        return false;
    };
    if rustix::process::getppid() != Some(peer.pid) {
        return false;
    }
    let parent = format!("/proc/{}/exe", peer.pid.as_raw_nonzero());
    match (
        std::fs::metadata("/proc/self/exe"),
        std::fs::metadata(parent),
    ) {
        (Ok(me), Ok(them)) => me.dev() == them.dev() && me.ino() == them.ino(),
        _ => false,
    }
}

/// Sends a random challenge and waits for it back: what the parent sent
/// before the helper ran (a program that queued requests, then ran
/// icmpmon, which passes `from_monitor`) cannot carry it.
fn challenged(sock: &OwnedFd) -> bool {
    let mut challenge = [0u8; CHALLENGE];
    if rustix::rand::getrandom(&mut challenge, rustix::rand::GetRandomFlags::empty()).ok()
        != Some(CHALLENGE)
        || send(sock, &challenge).is_err()
    {
        return false;
    }
    let mut back = [0u8; CHALLENGE + 1];
    matches!(
        rustix::net::recv(sock, &mut back, RecvFlags::TRUNC),
        Ok((CHALLENGE, CHALLENGE)) if back[..CHALLENGE] == challenge
    )
}

fn not_by_hand() -> ExitCode {
    say!("icmpmon: {HELPER_FLAG} starts one of icmpmon's own helper processes; it is not run by hand");
    ExitCode::from(2)
}

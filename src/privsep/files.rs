//! Files opened again once the run has started: on SIGHUP, the output
//! files (after log rotation) and the config file. Started as root, the
//! monitor gives root's uid up (`identity`), so a files helper, keeping
//! root's uid and CAP_DAC_OVERRIDE only, opens them for it and passes the
//! descriptor back (SCM_RIGHTS): the paths it was handed at start, each
//! the one way it was handed (appended to, or read), and nothing else.
//! Without that helper (icmpmon not started as root), the monitor opens
//! them itself, the same way (`open_direct`).
//!
//! The protocol: the handoff lists the files (kind, length, path; sent
//! before the first packet is read), then each request is 8 bytes (the
//! file's index) and each answer 8 bytes (0, or the errno of the failed
//! open), with the descriptor when 0.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::{Helper, Role, Served};

/// How a file is opened again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// An output after log rotation: write-only, appending, created if
    /// gone.
    Append,
    /// The config file: read-only.
    Read,
}

impl Mode {
    fn code(self) -> u8 {
        match self {
            Mode::Append => 1,
            Mode::Read => 2,
        }
    }

    fn of(code: u8) -> Option<Self> {
        match code {
            1 => Some(Mode::Append),
            2 => Some(Mode::Read),
            _ => None,
        }
    }
}

/// Opens `path` (relative to `dir`) the way `mode` says, and only a
/// regular file of its own (one link): after rotation an output's name may
/// be free for anyone who can write its directory, and a link planted
/// there would have root (the files helper) open some other file for the
/// monitor. So the name is looked at first without following a symbolic
/// link (`O_PATH | O_NOFOLLOW`: nothing is opened for reading or writing,
/// no device's open routine runs), checked, and only then opened, through
/// that very inode (`/proc/self/fd/N`); or created where nothing is, not
/// even a dangling link (`O_EXCL`). Never truncated; never blocking. A
/// config file that was a link at start may still be one (`follow`).
fn open_in(dir: BorrowedFd<'_>, path: &Path, mode: Mode, follow: bool) -> io::Result<File> {
    use rustix::fs::{openat, FileType, OFlags};
    use rustix::io::Errno;
    let (access, create) = match mode {
        Mode::Append => (OFlags::WRONLY | OFlags::APPEND, true),
        Mode::Read => (OFlags::RDONLY, false),
    };
    let open = OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK | access;
    if follow {
        // (Read only: what it is, the config's reader checks.)
        return finish(openat(dir, path, open, 0.into())?, mode);
    }
    let look = |dir| {
        openat(
            dir,
            path,
            OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            0.into(),
        )
    };
    let found = match look(dir) {
        Err(Errno::NOENT) if create => {
            let exclusive = open | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
            match openat(dir, path, exclusive, 0o666.into()) {
                Ok(fd) => return finish(fd, mode),
                // Made meanwhile by someone else: looked at as any other.
                Err(Errno::EXIST) => look(dir)?,
                Err(e) => return Err(e.into()),
            }
        }
        r => r?,
    };
    // (Errnos, which the helper's answer carries.)
    let stat = rustix::fs::fstat(&found)?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile if stat.st_nlink == 1 => {}
        FileType::RegularFile => return Err(Errno::MLINK.into()),
        FileType::Symlink => return Err(Errno::LOOP.into()),
        _ => return Err(Errno::INVAL.into()),
    }
    use std::os::fd::AsRawFd;
    let inode = format!("/proc/self/fd/{}", found.as_raw_fd());
    finish(
        openat(rustix::fs::CWD, inode.as_str(), open, 0.into())?,
        mode,
    )
}

/// The descriptor made blocking again, for writes to wait as they did on
/// the file opened at start.
fn finish(fd: OwnedFd, mode: Mode) -> io::Result<File> {
    if mode == Mode::Append {
        rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::APPEND)?;
    }
    Ok(File::from(fd))
}

/// `open_in` from the working directory: the monitor's own open, when it
/// has no files helper (with its own rights: the config may be a link).
pub(crate) fn open_direct(path: &Path, mode: Mode) -> io::Result<File> {
    open_in(rustix::fs::CWD, path, mode, mode == Mode::Read)
}

/// Where the helper opens a file: the directory it was in at start (held
/// open, so that no link swapped in above it later leads elsewhere), its
/// name there, how, and whether it was a symbolic link then.
#[derive(Debug)]
struct Place {
    dir: Result<OwnedFd, rustix::io::Errno>,
    name: PathBuf,
    mode: Mode,
    was_link: bool,
}

impl Place {
    fn of(mode: Mode, path: &Path) -> Self {
        use rustix::fs::OFlags;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = rustix::fs::openat(
            rustix::fs::CWD,
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            0.into(),
        );
        let was_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let name = path.file_name().map_or_else(PathBuf::new, PathBuf::from);
        Self {
            dir,
            name,
            mode,
            was_link,
        }
    }

    fn open(&self) -> io::Result<File> {
        let dir = self.dir.as_ref().map_err(|e| io::Error::from(*e))?;
        if self.name.as_os_str().is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        let follow = self.mode == Mode::Read && self.was_link;
        open_in(dir.as_fd(), &self.name, self.mode, follow)
    }
}

/// The request and the answer are 8 bytes each.
const MESSAGE_LEN: usize = 8;
/// At most this many files (--csv, --jsonl, --alerts, --write, --config).
const MAX_FILES: usize = 8;
/// A handoff holds at most `MAX_FILES` paths of at most PATH_MAX bytes.
const MAX_HANDOFF: usize = MAX_FILES * (3 + 4096);

/// The files a helper opens, by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Handoff(Vec<(Mode, PathBuf)>);

impl Handoff {
    pub(crate) fn new(files: Vec<(Mode, PathBuf)>) -> Self {
        Self(files)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (mode, path) in self.0.iter().take(MAX_FILES) {
            let bytes = path.as_os_str().as_bytes();
            let Ok(len) = u16::try_from(bytes.len()) else {
                continue;
            };
            out.push(mode.code());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Untrusted bytes: `None` unless every entry is whole, of a known
    /// kind, with a non-empty path without NUL, and there are at most
    /// `MAX_FILES` of them.
    fn decode(mut bytes: &[u8]) -> Option<Self> {
        let mut files = Vec::new();
        while !bytes.is_empty() {
            let (&[code, lo, hi], rest) = bytes.split_first_chunk::<3>()?;
            let len = usize::from(u16::from_le_bytes([lo, hi]));
            let path = rest
                .get(..len)
                .filter(|p| !p.is_empty() && !p.contains(&0))?;
            files.push((Mode::of(code)?, PathBuf::from(OsStr::from_bytes(path))));
            bytes = &rest[len..];
        }
        (files.len() <= MAX_FILES).then_some(Self(files))
    }

    fn index(&self, path: &Path, mode: Mode) -> Option<u8> {
        let i = self.0.iter().position(|(m, p)| *m == mode && p == path)?;
        u8::try_from(i).ok()
    }
}

/// The answer to a request: the open's errno, 0 when a descriptor comes.
fn answer(errno: i32) -> [u8; MESSAGE_LEN] {
    let mut a = [0u8; MESSAGE_LEN];
    a[..4].copy_from_slice(&errno.to_le_bytes());
    a
}

/// The run's files helper, once started: what it was handed, and it
/// (taken out when the run ends, `Opener`'s drop).
static HELPER: OnceLock<(Handoff, Mutex<Option<Helper>>)> = OnceLock::new();

/// The run's hold on its files helper: dropped at the end of the run,
/// it closes the helper's socket and reaps it.
#[derive(Debug)]
pub(crate) struct Opener {
    pid: u32,
}

impl Opener {
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for Opener {
    fn drop(&mut self) {
        if let Some((_, helper)) = HELPER.get() {
            let helper = helper.lock().unwrap_or_else(|e| e.into_inner()).take();
            drop(helper);
        }
    }
}

/// Starts the files helper for `files` (before the uid is given up): from
/// then on `open` asks it for them. None to start (no file is reopened):
/// nothing is done.
pub(crate) fn start_helper(files: Handoff) -> io::Result<Option<Opener>> {
    if files.0.is_empty() {
        return Ok(None);
    }
    let mut helper = Helper::spawn(Role::Files)?;
    // Answered once the helper holds the directories: before this process
    // reads a packet, or gives root's uid up.
    let mut got = [0u8; MESSAGE_LEN + 1];
    match helper.call(&files.encode(), &mut got, Duration::from_secs(10))? {
        (MESSAGE_LEN, None) if got[..MESSAGE_LEN] == answer(0) => {}
        _ => return Err(io::ErrorKind::InvalidData.into()),
    }
    let pid = helper.pid();
    HELPER
        .set((files, Mutex::new(Some(helper))))
        .map_err(|_| io::Error::other("a files helper is already running"))?;
    Ok(Some(Opener { pid }))
}

/// Opens `path` again the way `mode` says: through the files helper when
/// it was handed that path, else here.
pub(crate) fn open(path: &Path, mode: Mode) -> io::Result<File> {
    let Some((files, helper)) = HELPER.get() else {
        return open_direct(path, mode);
    };
    let Some(index) = files.index(path, mode) else {
        return open_direct(path, mode);
    };
    let mut request = [0u8; MESSAGE_LEN];
    request[0] = index;
    let mut helper = helper.lock().unwrap_or_else(|e| e.into_inner());
    let Some(helper) = helper.as_mut() else {
        return Err(io::Error::other("the files helper has ended"));
    };
    let mut got = [0u8; MESSAGE_LEN + 1];
    let (n, fd) = helper
        .call(&request, &mut got, Duration::from_secs(10))
        .map_err(|e| io::Error::new(e.kind(), helper.ended(&e)))?;
    match (n, fd) {
        (MESSAGE_LEN, Some(fd)) if got[..MESSAGE_LEN] == answer(0) => Ok(File::from(fd)),
        (MESSAGE_LEN, None) if got[4..MESSAGE_LEN] == [0; 4] && got[..4] != [0; 4] => {
            Err(io::Error::from_raw_os_error(i32::from_le_bytes([
                got[0], got[1], got[2], got[3],
            ])))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a malformed answer from the files helper",
        )),
    }
}

/// The helper's loop (its own process, root's uid with CAP_DAC_OVERRIDE
/// only): the handoff, then one file at a time until the monitor closes
/// the socket or sends something malformed.
pub(crate) fn serve(served: &Served) {
    let Some(files) = served.first(MAX_HANDOFF).and_then(|b| Handoff::decode(&b)) else {
        return;
    };
    let places: Vec<Place> = files.0.iter().map(|(m, p)| Place::of(*m, p)).collect();
    if !served.answer(&answer(0)) {
        return;
    }
    let mut buf = [0u8; MESSAGE_LEN];
    while let Some(request) = served.next(&mut buf, MESSAGE_LEN) {
        let Some(place) = places
            .get(usize::from(request[0]))
            .filter(|_| request[1..] == [0; MESSAGE_LEN - 1])
        else {
            break;
        };
        let sent = match place.open() {
            Ok(file) => served.answer_with_fd(&answer(0), OwnedFd::from(file)),
            Err(e) => served.answer(&answer(e.raw_os_error().unwrap_or(libc::EIO))),
        };
        if !sent {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_handoff_decodes_to_what_was_encoded() {
        let h = Handoff::new(vec![
            (Mode::Append, PathBuf::from("/var/log/icmpmon.csv")),
            (Mode::Read, PathBuf::from("relative/icmpmon.toml")),
        ]);
        assert_eq!(Handoff::decode(&h.encode()), Some(h.clone()));
        assert_eq!(
            h.index(Path::new("relative/icmpmon.toml"), Mode::Read),
            Some(1)
        );
        assert_eq!(
            h.index(Path::new("relative/icmpmon.toml"), Mode::Append),
            None
        );
        assert_eq!(h.index(Path::new("/etc/shadow"), Mode::Append), None);
    }

    #[test]
    fn a_bad_handoff_is_refused() {
        assert_eq!(Handoff::decode(&[3, 1, 0, b'x']), None, "unknown kind");
        assert_eq!(Handoff::decode(&[1, 2, 0, b'x']), None, "cut short");
        assert_eq!(Handoff::decode(&[1, 0, 0]), None, "empty path");
        assert_eq!(Handoff::decode(&[1, 2, 0, b'x', 0]), None, "NUL");
        let nine: Vec<u8> = (0..9).flat_map(|_| [1, 1, 0, b'x']).collect();
        assert_eq!(Handoff::decode(&nine), None, "too many");
    }

    #[test]
    fn an_output_is_never_reached_through_a_link() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "kept\n").unwrap();
        let errno = |path: &Path| open_direct(path, Mode::Append).unwrap_err().raw_os_error();
        symlink(&target, dir.path().join("link.csv")).unwrap();
        assert_eq!(errno(&dir.path().join("link.csv")), Some(libc::ELOOP));
        symlink(dir.path().join("absent"), dir.path().join("dangling.csv")).unwrap();
        assert_eq!(errno(&dir.path().join("dangling.csv")), Some(libc::ELOOP));
        assert!(
            !dir.path().join("absent").exists(),
            "nothing created through it"
        );
        std::fs::hard_link(&target, dir.path().join("hard.csv")).unwrap();
        assert_eq!(errno(&dir.path().join("hard.csv")), Some(libc::EMLINK));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept\n");
        // Read (the config file) may be a link.
        assert!(open_direct(&dir.path().join("link.csv"), Mode::Read).is_ok());
    }

    /// The config file: a link at start may stay one; a file that a link
    /// replaced later is refused (it could lead to any file root reads).
    #[test]
    fn the_config_is_followed_only_if_it_was_a_link() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let (real, secret) = (dir.path().join("real.toml"), dir.path().join("secret"));
        std::fs::write(&real, "").unwrap();
        std::fs::write(&secret, "").unwrap();
        let (plain, linked) = (
            dir.path().join("plain.toml"),
            dir.path().join("linked.toml"),
        );
        std::fs::write(&plain, "").unwrap();
        symlink(&real, &linked).unwrap();
        let (plain_place, linked_place) = (
            Place::of(Mode::Read, &plain),
            Place::of(Mode::Read, &linked),
        );
        assert!(plain_place.open().is_ok() && linked_place.open().is_ok());
        std::fs::remove_file(&plain).unwrap();
        symlink(&secret, &plain).unwrap();
        let e = plain_place.open().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert!(linked_place.open().is_ok());
    }

    /// The helper's loop over a socketpair: a file handed over is opened
    /// (descriptor passed), one that fails answers its errno, and an index
    /// beyond the handoff ends the helper.
    #[test]
    fn the_helper_opens_only_what_it_was_handed() {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.csv");
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let served = Served {
            sock: theirs,
            _signals: None,
        };
        let handoff = Handoff::new(vec![
            (Mode::Append, out.clone()),
            (Mode::Read, dir.path().join("missing.toml")),
        ]);
        let server = std::thread::spawn(move || serve(&served));
        super::super::socket::send(&ours, &handoff.encode()).unwrap();
        let mut ack = [0u8; MESSAGE_LEN];
        let (n, _) =
            super::super::socket::receive(&ours, &mut ack, Duration::from_secs(5)).unwrap();
        assert_eq!(ack[..n], answer(0), "the directories are held");
        let ask = |index: u8| {
            let mut request = [0u8; MESSAGE_LEN];
            request[0] = index;
            super::super::socket::send(&ours, &request).unwrap();
            let mut got = [0u8; MESSAGE_LEN];
            super::super::socket::receive(&ours, &mut got, Duration::from_secs(5))
                .map(|(n, fd)| (got[..n].to_vec(), fd))
        };
        let (got, fd) = ask(0).unwrap();
        assert_eq!(got, answer(0));
        use std::io::Write;
        File::from(fd.expect("a descriptor"))
            .write_all(b"row\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "row\n");
        let (got, fd) = ask(1).unwrap();
        assert_eq!((got, fd.is_none()), (answer(libc::ENOENT).to_vec(), true));
        assert!(ask(2).is_err(), "an index beyond the handoff: no answer");
        server.join().unwrap();
    }

    #[test]
    fn a_direct_open_appends_creates_and_never_blocks_on_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, "a\n").unwrap();
        use std::io::Write;
        open_direct(&path, Mode::Append)
            .unwrap()
            .write_all(b"b\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Not a file of its own: refused before anything is opened (no
        // wait for a reader either way).
        let e = open_direct(&fifo, Mode::Append).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert!(open_direct(&fifo, Mode::Read).is_ok(), "read: no wait");
        let gone = dir.path().join("gone.csv");
        open_direct(&gone, Mode::Append).unwrap();
        assert!(gone.is_file(), "created where nothing was");
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Some(h) = Handoff::decode(&bytes) {
                prop_assert!(h.0.len() <= MAX_FILES);
                prop_assert_eq!(Handoff::decode(&h.encode()), Some(h));
            }
        }
    }
}

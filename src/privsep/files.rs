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
use std::os::fd::OwnedFd;
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

/// Opens `path` the way `mode` says, without blocking (a FIFO with no
/// writer, or no reader, would hold the aggregator or the helper: the
/// open fails instead, or the descriptor is made blocking again once
/// open, for writes to wait as they did on the file opened at start).
pub(crate) fn open_direct(path: &Path, mode: Mode) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = File::options();
    match mode {
        Mode::Append => options.append(true).create(true),
        Mode::Read => options.read(true),
    };
    let file = options
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if mode == Mode::Append {
        rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::APPEND)?;
    }
    Ok(file)
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

/// The run's files helper, once started: what it was handed, and it.
static HELPER: OnceLock<(Handoff, Mutex<Helper>)> = OnceLock::new();

/// Starts the files helper for `files` (before the uid is given up): from
/// then on `open` asks it for them. None to start (no file is reopened):
/// nothing is done.
pub(crate) fn start_helper(files: Handoff) -> io::Result<Option<u32>> {
    if files.0.is_empty() {
        return Ok(None);
    }
    let mut helper = Helper::spawn(Role::Files)?;
    helper.post(&files.encode())?;
    let pid = helper.pid();
    HELPER
        .set((files, Mutex::new(helper)))
        .map_err(|_| io::Error::other("a files helper is already running"))?;
    Ok(Some(pid))
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
    let mut buf = [0u8; MESSAGE_LEN];
    while let Some(request) = served.next(&mut buf, MESSAGE_LEN) {
        let Some(&(mode, ref path)) = files
            .0
            .get(usize::from(request[0]))
            .filter(|_| request[1..] == [0; MESSAGE_LEN - 1])
        else {
            break;
        };
        let sent = match open_direct(path, mode) {
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
    fn a_direct_open_appends_and_never_blocks_on_a_fifo() {
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
        let e = open_direct(&fifo, Mode::Append).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "no reader: {e}");
        assert!(open_direct(&fifo, Mode::Read).is_ok(), "read: no wait");
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

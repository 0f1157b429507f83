//! Terminal input: bytes read from standard input, decoded into keys.
//!
//! One path only. crossterm's own reader keeps an internal buffer beside
//! the file descriptor, so a poll on the descriptor could say "nothing"
//! while a key sat in that buffer (the key after a resize waited for the
//! next one), and on a hung-up terminal it retries `read() = 0` forever.
//! Here the descriptor is polled, what is there is read at once and every
//! key in it is returned; end of file is a hang-up.

use std::io;
use std::time::Duration;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use rustix::event::{PollFd, PollFlags, Timespec};

/// What waiting for input gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input {
    Keys(Vec<KeyEvent>),
    /// Nothing within the wait.
    Idle,
}

/// Waits up to `wait` for input on standard input and decodes all of it.
/// A hung-up terminal (end of file, POLLHUP, EIO) is a `BrokenPipe` error.
pub(crate) fn read_keys(wait: Duration) -> io::Result<Input> {
    let fd = rustix::stdio::stdin();
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(0) | Err(rustix::io::Errno::INTR) => return Ok(Input::Idle),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    let revents = fds[0].revents();
    if !revents.contains(PollFlags::IN) {
        // POLLHUP / POLLERR / POLLNVAL without data.
        return Err(gone());
    }
    let mut buf = [0u8; 1024];
    match rustix::io::read(fd, &mut buf) {
        Ok(0) => Err(gone()),
        Ok(n) => Ok(Input::Keys(decode(&buf[..n]))),
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => Ok(Input::Idle),
        Err(rustix::io::Errno::IO) => Err(gone()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the terminal has gone (hang-up)")
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// Decodes what one read returned: UTF-8 text, control keys, and the CSI /
/// SS3 sequences of xterm-like terminals for the keys the dashboard uses.
/// An escape at the end of the read is the Esc key (a sequence arrives in
/// one read); sequences it does not know are skipped whole.
pub(crate) fn decode(bytes: &[u8]) -> Vec<KeyEvent> {
    let mut keys = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match b {
            0x1b => match bytes.get(i) {
                Some(b'[') => {
                    // CSI: parameters and intermediates, then a final byte.
                    let start = i + 1;
                    let end = bytes[start..]
                        .iter()
                        .position(|c| (0x40..=0x7e).contains(c))
                        .map(|p| start + p);
                    let Some(end) = end else {
                        break;
                    };
                    if let Some(k) = csi(&bytes[start..end], bytes[end]) {
                        keys.push(k);
                    }
                    i = end + 1;
                }
                Some(b'O') => {
                    if let Some(k) = bytes.get(i + 1).and_then(|c| ss3(*c)) {
                        keys.push(k);
                    }
                    i += 2;
                }
                Some(0x1b) | None => keys.push(key(KeyCode::Esc)),
                // Alt+key: the key, Alt held.
                Some(_) => {
                    let mut k = decode(&bytes[i..i + 1]);
                    if let Some(mut k) = k.pop() {
                        k.modifiers |= KeyModifiers::ALT;
                        keys.push(k);
                    }
                    i += 1;
                }
            },
            b'\r' | b'\n' => keys.push(key(KeyCode::Enter)),
            b'\t' => keys.push(key(KeyCode::Tab)),
            0x7f | 0x08 => keys.push(key(KeyCode::Backspace)),
            0x00 => keys.push(KeyEvent::new(KeyCode::Char(' '), KeyModifiers::CONTROL)),
            0x01..=0x1a => keys.push(KeyEvent::new(
                KeyCode::Char(char::from(b - 1 + b'a')),
                KeyModifiers::CONTROL,
            )),
            0x1c..=0x1f => {}
            _ => {
                // One UTF-8 character (its length from the lead byte).
                let len = match b {
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    0xf0..=0xf7 => 4,
                    _ => 1,
                };
                let end = (i - 1 + len).min(bytes.len());
                if let Some(c) = std::str::from_utf8(&bytes[i - 1..end])
                    .ok()
                    .and_then(|s| s.chars().next())
                {
                    let mods = if c.is_uppercase() {
                        KeyModifiers::SHIFT
                    } else {
                        KeyModifiers::NONE
                    };
                    keys.push(KeyEvent::new(KeyCode::Char(c), mods));
                }
                i = end;
            }
        }
    }
    keys
}

fn csi(params: &[u8], last: u8) -> Option<KeyEvent> {
    let code = match (params, last) {
        (_, b'A') => KeyCode::Up,
        (_, b'B') => KeyCode::Down,
        (_, b'C') => KeyCode::Right,
        (_, b'D') => KeyCode::Left,
        (_, b'H') => KeyCode::Home,
        (_, b'F') => KeyCode::End,
        (_, b'Z') => KeyCode::BackTab,
        (p, b'~') => match p.split(|c| *c == b';').next()? {
            b"1" | b"7" => KeyCode::Home,
            b"4" | b"8" => KeyCode::End,
            b"3" => KeyCode::Delete,
            b"5" => KeyCode::PageUp,
            b"6" => KeyCode::PageDown,
            _ => return None,
        },
        _ => return None,
    };
    Some(key(code))
}

fn ss3(c: u8) -> Option<KeyEvent> {
    Some(key(match c {
        b'A' => KeyCode::Up,
        b'B' => KeyCode::Down,
        b'C' => KeyCode::Right,
        b'D' => KeyCode::Left,
        b'H' => KeyCode::Home,
        b'F' => KeyCode::End,
        _ => return None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(bytes: &[u8]) -> Vec<KeyCode> {
        decode(bytes).into_iter().map(|k| k.code).collect()
    }

    #[test]
    fn every_key_of_one_read_is_returned() {
        assert_eq!(
            codes(b"s\x1b[Ap"),
            [KeyCode::Char('s'), KeyCode::Up, KeyCode::Char('p')]
        );
        assert_eq!(
            codes(b"\x1b[5~\x1b[6~\x1bOB\x1b[1;5H\r\t\x7f"),
            [
                KeyCode::PageUp,
                KeyCode::PageDown,
                KeyCode::Down,
                KeyCode::Home,
                KeyCode::Enter,
                KeyCode::Tab,
                KeyCode::Backspace
            ]
        );
    }

    #[test]
    fn escape_alone_control_and_utf8() {
        assert_eq!(codes(b"\x1b"), [KeyCode::Esc]);
        assert_eq!(codes(b"\x1b\x1b"), [KeyCode::Esc, KeyCode::Esc]);
        let k = decode(b"\x15");
        assert_eq!(k[0].code, KeyCode::Char('u'));
        assert_eq!(k[0].modifiers, KeyModifiers::CONTROL);
        assert_eq!(
            codes("é→".as_bytes()),
            [KeyCode::Char('é'), KeyCode::Char('→')]
        );
        // Unknown sequences are skipped whole, a cut one ends the read.
        assert_eq!(codes(b"\x1b[200~x"), [KeyCode::Char('x')]);
        assert_eq!(codes(b"q\x1b[12"), [KeyCode::Char('q')]);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode(&bytes);
        }
    }
}

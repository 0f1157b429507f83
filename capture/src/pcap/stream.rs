//! A bounded, interruptible byte stream under the capture-file parsers.
//!
//! Files and pipes are read the same way: in chunks into one buffer that the
//! parsers look at, so memory stays bounded whatever the input's length
//! (`/dev/zero`, a 1 GB pipe), and rows come out while a pipe is still
//! open (`tcpdump -U -w - | icmpmon --source pcap:-`). A read that could
//! block (pipes, terminals, devices) first polls the input together with
//! the run's stop, so Ctrl-C ends a run whose writer has gone quiet.

use std::io::{self, Read};
use std::os::fd::AsFd;

use rustix::event::{PollFd, PollFlags};

use crate::pipeline::Stop;

/// Bytes read per system call.
const CHUNK: usize = 256 * 1024;
/// The longest record (pcap packet or pcapng block) accepted. libpcap caps
/// packets at 256 KiB; anything near this bound is a damaged length field,
/// and must not make icmpmon allocate gigabytes.
pub(crate) const MAX_RECORD: usize = 1 << 20;

/// Where the bytes come from.
pub(crate) enum Input {
    /// A file, pipe or device; `poll` says whether reads can block.
    Fd { file: std::fs::File, poll: bool },
    /// Bytes from elsewhere (tests).
    Reader(Box<dyn Read + Send>),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Fd { poll, .. } => write!(f, "Input::Fd {{ poll: {poll} }}"),
            Input::Reader(_) => f.write_str("Input::Reader"),
        }
    }
}

impl Input {
    pub(crate) fn file(file: std::fs::File) -> io::Result<Self> {
        let poll = !file.metadata()?.file_type().is_file();
        Ok(Input::Fd { file, poll })
    }

    /// True when reads may wait for a writer (rows should not wait for a
    /// batch to fill then).
    pub(crate) fn is_live(&self) -> bool {
        matches!(self, Input::Fd { poll: true, .. })
    }

    /// One read; `Ok(None)` when the run stopped first.
    fn read(&mut self, buf: &mut [u8], stop: Option<&Stop>) -> io::Result<Option<usize>> {
        match self {
            Input::Fd { file, poll } => {
                if let (true, Some(stop)) = (*poll, stop) {
                    if !wait_input(file.as_fd(), stop)? {
                        return Ok(None);
                    }
                }
                loop {
                    match file.read(buf) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => return other.map(Some),
                    }
                }
            }
            Input::Reader(r) => r.read(buf).map(Some),
        }
    }
}

/// Waits for input or stop; false on stop.
fn wait_input(fd: std::os::fd::BorrowedFd<'_>, stop: &Stop) -> io::Result<bool> {
    loop {
        let stop_fd = stop.fd();
        let mut fds = [
            PollFd::new(&fd, PollFlags::IN),
            PollFd::new(&stop_fd, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            // Hang-up or error on the input also make a read return.
            Ok(_) => return Ok(fds[1].revents().is_empty()),
        }
    }
}

/// Why `fill` could not give the parser more bytes.
#[derive(Debug)]
pub(crate) enum Starved {
    /// End of input.
    Eof,
    /// The run stopped while waiting for input.
    Stopped,
    /// A record longer than `MAX_RECORD`.
    TooLong,
    Io(io::Error),
}

/// A window onto the input: `bytes()` is what has been read and not yet
/// consumed; `offset()` is where it starts in the input.
#[derive(Debug)]
pub(crate) struct Stream {
    input: Input,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    offset: u64,
}

impl Stream {
    pub(crate) fn new(input: Input) -> Self {
        Self {
            input,
            buf: Vec::new(),
            start: 0,
            end: 0,
            offset: 0,
        }
    }

    pub(crate) fn is_live(&self) -> bool {
        self.input.is_live()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.offset += n as u64;
    }

    /// Reads at least one more byte after what `bytes()` holds.
    pub(crate) fn fill(&mut self, stop: Option<&Stop>) -> Result<(), Starved> {
        let held = self.end - self.start;
        if held >= MAX_RECORD {
            return Err(Starved::TooLong);
        }
        if self.start > 0 && (self.end == self.buf.len() || self.start >= self.buf.len() / 2) {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = held;
        }
        if self.end == self.buf.len() {
            let want = (self.buf.len() * 2).clamp(CHUNK, MAX_RECORD + CHUNK);
            self.buf.resize(want, 0);
        }
        let space = &mut self.buf[self.end..];
        match self.input.read(space, stop) {
            Ok(None) => Err(Starved::Stopped),
            Ok(Some(0)) => Err(Starved::Eof),
            Ok(Some(n)) => {
                self.end += n;
                Ok(())
            }
            Err(e) => Err(Starved::Io(e)),
        }
    }
}

/// Gives its bytes out in the given pieces, as a pipe would.
#[cfg(test)]
pub(crate) struct Pieces(pub(crate) Vec<Vec<u8>>);

#[cfg(test)]
impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(p) = self.0.first_mut() else {
            return Ok(0);
        };
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p[..n]);
        p.drain(..n);
        if p.is_empty() {
            self.0.remove(0);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_everything_in_order_and_counts_offsets() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3 * CHUNK + 17).collect();
        let pieces = data.chunks(1000).map(<[u8]>::to_vec).collect();
        let mut s = Stream::new(Input::Reader(Box::new(Pieces(pieces))));
        let mut got = Vec::new();
        loop {
            let b = s.bytes();
            let n = b.len().min(777);
            got.extend_from_slice(&b[..n]);
            s.consume(n);
            if s.bytes().is_empty() {
                match s.fill(None) {
                    Ok(()) => {}
                    Err(Starved::Eof) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        assert_eq!(got, data);
        assert_eq!(s.offset(), data.len() as u64);
    }

    #[test]
    fn a_record_longer_than_the_bound_is_refused() {
        let mut s = Stream::new(Input::Reader(Box::new(io::repeat(0))));
        let err = loop {
            if let Err(e) = s.fill(None) {
                break e;
            }
        };
        assert!(matches!(err, Starved::TooLong), "{err:?}");
        assert!(s.buf.len() <= MAX_RECORD + CHUNK);
    }
}

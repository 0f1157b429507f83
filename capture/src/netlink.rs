//! Netlink plumbing shared by the kernel-module and NFQUEUE sources: waiting
//! with a timeout (so a stop request is seen), sizing the receive buffer,
//! walking a datagram's messages and reading extended-ACK text.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkSerializable, NlaBuffer, NlasIterator,
};
use netlink_sys::Socket;
use rustix::event::{PollFd, PollFlags, Timespec};

use crate::pipeline::Stop;

/// Flags of an NLMSG_ERROR message (linux/netlink.h).
const NLM_F_CAPPED: u16 = libc::NLM_F_CAPPED as u16;
const NLM_F_ACK_TLVS: u16 = libc::NLM_F_ACK_TLVS as u16;
/// Not in libc: linux/netlink.h, enum nlmsgerr_attrs.
const NLMSGERR_ATTR_MSG: u16 = 1;
pub const NLMSG_HDRLEN: usize = 16;

/// An error ACK: which request, its errno and the kernel's extack text.
#[derive(Debug, thiserror::Error)]
#[error("the kernel refused {what}: {errno}{}", extack.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
pub struct Refusal {
    pub what: &'static str,
    pub errno: io::Error,
    pub extack: Option<String>,
}

impl Refusal {
    pub fn errno(&self) -> Option<i32> {
        self.errno.raw_os_error()
    }
}

/// What a wait on a socket ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Readable,
    TimedOut,
    Stopped,
}

/// Waits up to `timeout` (None: without limit) for the socket to become
/// readable, or for `stop`.
pub fn wait_readable(
    sock: &impl AsFd,
    timeout: Option<Duration>,
    stop: Option<&Stop>,
) -> io::Result<Wait> {
    let sock_fd = sock.as_fd();
    let stop_fd = stop.map(Stop::fd);
    let mut fds = vec![PollFd::new(&sock_fd, PollFlags::IN)];
    if let Some(fd) = &stop_fd {
        fds.push(PollFd::new(fd, PollFlags::IN));
    }
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let left = deadline.map(|d| {
            let t = d.saturating_duration_since(std::time::Instant::now());
            Timespec {
                tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(t.subsec_nanos()),
            }
        });
        match rustix::event::poll(&mut fds, left.as_ref()) {
            Ok(0) => return Ok(Wait::TimedOut),
            // A signal: its handler sets the stop if it means one, so wait
            // on for the time left.
            Err(rustix::io::Errno::INTR) => continue,
            Ok(_) if fds.get(1).is_some_and(|f| !f.revents().is_empty()) => {
                return Ok(Wait::Stopped)
            }
            Ok(_) => return Ok(Wait::Readable),
            Err(e) => return Err(e.into()),
        }
    }
}

/// `wait_readable` without a stop, for bounded request/reply exchanges:
/// true when readable.
pub fn readable_within(sock: &Socket, timeout: Duration) -> io::Result<bool> {
    Ok(wait_readable(sock, Some(timeout), None)? == Wait::Readable)
}

/// How a request's ACK ended.
#[derive(Debug)]
pub enum Acked {
    Ok,
    Refused(Refusal),
    TimedOut,
}

/// Waits up to `timeout` for the ACK of request `seq` and returns it,
/// skipping other messages (none are expected before the ACK: the caller
/// has installed nothing that sends any yet).
pub fn wait_ack(
    sock: &Socket,
    buf: &mut Vec<u8>,
    seq: u32,
    what: &'static str,
    timeout: Duration,
) -> io::Result<Acked> {
    use netlink_packet_core::{ErrorBuffer, NLMSG_ERROR};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if !readable_within(sock, left)? {
            return Ok(Acked::TimedOut);
        }
        buf.clear();
        sock.recv(buf, 0)?;
        for bytes in datagram_messages(buf) {
            let Ok(nl) = NetlinkBuffer::new_checked(bytes) else {
                continue;
            };
            if nl.message_type() != NLMSG_ERROR || nl.sequence_number() != seq {
                continue;
            }
            let flags = nl.flags();
            let Ok(err) = ErrorBuffer::new_checked(nl.payload()) else {
                continue;
            };
            return Ok(match err.code() {
                None => Acked::Ok,
                Some(code) => Acked::Refused(Refusal {
                    what,
                    errno: io::Error::from_raw_os_error(-code.get()),
                    extack: extack_message(flags, err.payload()),
                }),
            });
        }
    }
}

/// `msg` as the bytes that go on the socket.
pub(crate) fn encode<T: NetlinkSerializable + std::fmt::Debug>(
    mut msg: NetlinkMessage<T>,
) -> Vec<u8> {
    msg.finalize();
    let mut out = vec![0; msg.buffer_len()];
    msg.serialize(&mut out);
    out
}

/// A netfilter netlink socket (NFQUEUE, NFLOG): numbered requests, their
/// ACKs, and non-blocking reads of what the kernel sends.
#[derive(Debug)]
pub struct NetfilterSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NetfilterSocket {
    pub fn open(receive_buffer: usize) -> io::Result<Self> {
        let mut sock = Socket::new(libc::NETLINK_NETFILTER as isize)?;
        sock.bind_auto()?;
        sock.set_ext_ack(true)?;
        sock.set_cap_ack(true)?;
        set_receive_buffer(&sock, receive_buffer);
        Ok(Self {
            sock,
            seq: 1,
            buf: Vec::with_capacity(256 * 1024),
        })
    }

    pub fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Sends `msg` with the next sequence number, which it returns.
    pub fn send<T: NetlinkSerializable + std::fmt::Debug>(
        &mut self,
        mut msg: NetlinkMessage<T>,
    ) -> io::Result<u32> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        msg.header.sequence_number = seq;
        self.sock.send(&encode(msg), 0)?;
        Ok(seq)
    }

    /// Sends `msg` (flagged NLM_F_ACK) and waits up to `timeout` for its
    /// ACK. Only for set-up: nothing else may be on the socket yet.
    pub fn request<T: NetlinkSerializable + std::fmt::Debug>(
        &mut self,
        what: &'static str,
        msg: NetlinkMessage<T>,
        timeout: Duration,
    ) -> io::Result<Acked> {
        let seq = self.send(msg)?;
        wait_ack(&self.sock, &mut self.buf, seq, what, timeout)
    }

    /// The next datagram waiting, without blocking; `None` when there is
    /// none. ENOBUFS (the kernel could not queue a message for us) is
    /// counted in `overruns` and skipped.
    pub fn try_recv(
        &mut self,
        overruns: &std::sync::atomic::AtomicU64,
    ) -> io::Result<Option<&[u8]>> {
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, libc::MSG_DONTWAIT) {
                Ok(_) => return Ok(Some(&self.buf)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overruns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A netfilter timestamp attribute (NFQA_TIMESTAMP, NFULA_TIMESTAMP: big
/// endian seconds and microseconds) in nanoseconds; `None` when short.
pub fn timestamp_ns(v: &[u8]) -> Option<u64> {
    let sec = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let usec = u64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
    Some(
        sec.saturating_mul(1_000_000_000)
            .saturating_add(usec.saturating_mul(1000)),
    )
}

/// Whether `number` is in the first column of a /proc list of netfilter
/// instances (/proc/net/netfilter/nfnetlink_queue or nfnetlink_log): bound
/// by some socket in this namespace. `unknown` when the list cannot be read
/// (it is root's only).
pub fn bound_in_proc(path: &str, number: u16, unknown: bool) -> bool {
    std::fs::read_to_string(path).map_or(unknown, |text| first_column(&text).any(|n| n == number))
}

fn first_column(text: &str) -> impl Iterator<Item = u16> + '_ {
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
}

/// Asks for a receive buffer of `bytes`: SO_RCVBUFFORCE (CAP_NET_ADMIN),
/// else SO_RCVBUF up to net.core.rmem_max.
pub fn set_receive_buffer(sock: &Socket, bytes: usize) {
    let val = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let forced = rustix::net::sockopt::set_socket_recv_buffer_size_force(sock, bytes);
    if forced.is_err() {
        // Without CAP_NET_ADMIN: as much as net.core.rmem_max allows.
        if let Err(e) = sock.set_rx_buf_sz(val) {
            tracing::warn!("cannot size the netlink receive buffer: {e}");
        }
    }
}

/// The netlink messages packed in one datagram.
pub fn datagram_messages(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let rest = buf.get(off..)?;
        let len = NetlinkBuffer::new_checked(rest).ok()?.length() as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        off += len.next_multiple_of(4);
        Some(&rest[..len])
    })
}

/// The extack text of an NLMSG_ERROR payload (after the error code).
pub fn extack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let orig_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = payload.get(..4)?;
        u32::from_ne_bytes(len.try_into().ok()?) as usize
    };
    let tlvs = payload.get(orig_len.next_multiple_of(4)..)?;
    NlasIterator::new(tlvs).flatten().find_map(|nla| {
        (nla.kind() == NLMSGERR_ATTR_MSG).then(|| {
            String::from_utf8_lossy(nla.value())
                .trim_end_matches('\0')
                .to_owned()
        })
    })
}

/// An attribute's value, borrowed from the message (`NlaBuffer::value`
/// borrows the attribute): a packet is read in place, not copied out.
pub(crate) fn nla_value(nla: NlaBuffer<&[u8]>) -> &[u8] {
    // NlasIterator checked the length against the buffer.
    let end = usize::from(nla.length());
    nla.into_inner().get(4..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extack_message_is_found_after_capped_header() {
        let mut payload = vec![0u8; NLMSG_HDRLEN];
        let text = b"hook mask selects no hook\0";
        let len = (4 + text.len()) as u16;
        payload.extend_from_slice(&len.to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        payload.resize(payload.len().next_multiple_of(4), 0);
        let got = extack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload);
        assert_eq!(got.as_deref(), Some("hook mask selects no hook"));
        assert_eq!(extack_message(NLM_F_CAPPED, &payload), None);
    }

    #[test]
    fn bound_numbers_from_proc_lists() {
        // nfnetlink_queue, then nfnetlink_log.
        let queue = "    0  12345     0 2  256     0     0        5  1\n 7707 -4001     3 2  256     0     0       10  1\n";
        assert_eq!(first_column(queue).collect::<Vec<_>>(), vec![0, 7707]);
        let log = "   42   6683     0 2 65531      1  1\n 7710 -4001     3 2  256     1  1\n";
        assert_eq!(first_column(log).collect::<Vec<_>>(), vec![42, 7710]);
    }

    #[test]
    fn datagram_messages_stop_at_bad_length() {
        let mut buf = vec![0u8; 40];
        buf[0..4].copy_from_slice(&20u32.to_ne_bytes());
        buf[20..24].copy_from_slice(&100u32.to_ne_bytes());
        let msgs: Vec<_> = datagram_messages(&buf).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].len(), 20);
    }
}

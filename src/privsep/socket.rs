//! The helpers' socket: one message at a time on a SOCK_SEQPACKET
//! socketpair, with a descriptor when one is passed (SCM_RIGHTS).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

pub(super) fn send(sock: &OwnedFd, message: &[u8]) -> io::Result<()> {
    loop {
        match rustix::net::send(sock, message, SendFlags::NOSIGNAL) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map(drop).map_err(Into::into),
        }
    }
}

/// Sends `bytes` with a copy of `fd` (SCM_RIGHTS).
pub(super) fn send_with_fd(sock: &OwnedFd, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// One message, within `wait`: its length, and the descriptor it carried
/// if it carried exactly one (any other is closed). Signals interrupt the
/// wait (EINTR) and it goes on until `wait` has passed.
pub(super) fn receive(
    sock: &OwnedFd,
    answer: &mut [u8],
    wait: Duration,
) -> io::Result<(usize, Option<OwnedFd>)> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let left = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(sock, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&left)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        match receive_with_fds(sock, answer, RecvFlags::DONTWAIT) {
            Ok((0, _)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok((n, mut fds)) => return Ok((n, (fds.len() == 1).then(|| fds.remove(0)))),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One message into `buf` with the descriptors it carries (at most two are
/// taken; the kernel closes the rest): its length and them.
pub(super) fn receive_with_fds(
    sock: &OwnedFd,
    buf: &mut [u8],
    flags: RecvFlags,
) -> rustix::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        flags | RecvFlags::CMSG_CLOEXEC,
    )?;
    let fds = control
        .drain()
        .flat_map(|m| match m {
            RecvAncillaryMessage::ScmRights(fds) => fds.collect(),
            _ => Vec::new(),
        })
        .collect();
    Ok((got.bytes, fds))
}

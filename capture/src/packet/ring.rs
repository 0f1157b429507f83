//! The only unsafe code of icmpmon: an AF_PACKET socket with a memory-mapped
//! TPACKET_V3 receive ring (`man 7 packet`,
//! `Documentation/networking/packet_mmap.rst`).
//!
//! What is unsafe, and why it is sound:
//! - `setsockopt`/`getsockopt`/`bind` take pointers to structs that live on
//!   the stack for the call, with their exact sizes.
//! - The ring is one shared mapping of `blocks × block_size` bytes, owned
//!   by `Ring` and unmapped in `Drop`. A block belongs to the kernel until
//!   its status word has `TP_STATUS_USER`; that word is only ever read and
//!   written as an atomic (acquire/release, as the kernel's smp_wmb/smp_rmb
//!   pair expects). A block's bytes are handed out as a slice only while it
//!   is ours, and the slice borrows `Ring` mutably, so it cannot outlive the
//!   release that gives the block back.
//!
//! Everything the kernel wrote inside a block (offsets, lengths) is parsed
//! by safe, bounds-checked code in `super`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Offset of `hdr.bh1.block_status` in `struct tpacket_block_desc`.
const BLOCK_STATUS: usize = 8;

/// A ring's geometry (`struct tpacket_req3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub block_size: u32,
    pub blocks: u32,
    pub frame_size: u32,
    /// Longest time a partly filled block waits before it is handed over.
    pub timeout_ms: u32,
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setsockopt<T>(fd: BorrowedFd<'_>, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised T and its size is passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

/// A packet socket that captures nothing yet (protocol 0).
pub(crate) fn socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        rustix::net::AddressFamily::PACKET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Attaches a classic BPF program (checked by the kernel).
pub(crate) fn attach_filter(fd: BorrowedFd<'_>, code: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(code.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        // The kernel copies the program during the call; it never writes.
        filter: code.as_ptr().cast_mut(),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

/// Starts capturing every protocol, on every interface of the namespace.
pub(crate) fn bind_all(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: a live sockaddr_ll and its size.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
}

/// `PACKET_STATISTICS`: packets and drops since the last call (the kernel
/// resets them on every read).
pub(crate) fn statistics(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let mut st = libc::tpacket_stats_v3 {
        tp_packets: 0,
        tp_drops: 0,
        tp_freeze_q_cnt: 0,
    };
    let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
    // SAFETY: a live, writable tpacket_stats_v3 and its size.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            std::ptr::from_mut(&mut st).cast(),
            &mut len,
        )
    })?;
    // tp_packets counts the drops too.
    let drops = u64::from(st.tp_drops);
    Ok((u64::from(st.tp_packets).saturating_sub(drops), drops))
}

/// The receive ring, mapped.
#[derive(Debug)]
pub(crate) struct Ring {
    map: NonNull<u8>,
    len: usize,
    block_size: usize,
    blocks: usize,
    /// Shared with whoever must keep the socket's number taken until the
    /// process ends (the sandbox, which refuses writes to that number).
    fd: Arc<OwnedFd>,
}

// SAFETY: the mapping is owned by `Ring` alone (no aliasing handles), and
// blocks are only touched through `&mut Ring`; the socket fd is Send.
unsafe impl Send for Ring {}

impl Ring {
    /// Switches `fd` to TPACKET_V3, sets up the ring and maps it.
    pub(crate) fn new(fd: OwnedFd, g: Geometry) -> io::Result<Self> {
        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VERSION, &version)?;
        let per_block = g.block_size / g.frame_size.max(1);
        let req = libc::tpacket_req3 {
            tp_block_size: g.block_size,
            tp_block_nr: g.blocks,
            tp_frame_size: g.frame_size,
            tp_frame_nr: per_block * g.blocks,
            tp_retire_blk_tov: g.timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let block_size = g.block_size as usize;
        let blocks = g.blocks as usize;
        let len = block_size * blocks;
        // SAFETY: a fresh shared mapping of the ring the kernel just made
        // for this socket; nothing else maps it.
        let map = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        let map = NonNull::new(map.cast::<u8>()).ok_or(io::ErrorKind::InvalidData)?;
        Ok(Self {
            map,
            len,
            block_size,
            blocks,
            fd: Arc::new(fd),
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket, kept open for as long as the caller holds it.
    pub(crate) fn keeper(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.fd)
    }

    pub(crate) fn blocks(&self) -> usize {
        self.blocks
    }

    fn status(&self, block: usize) -> &AtomicU32 {
        assert!(block < self.blocks);
        // SAFETY: inside the mapping (block < blocks), 4-byte aligned (the
        // mapping is page aligned, block_size a multiple of pages), and the
        // word is shared with the kernel only through atomic accesses.
        unsafe {
            AtomicU32::from_ptr(
                self.map
                    .as_ptr()
                    .add(block * self.block_size + BLOCK_STATUS)
                    .cast(),
            )
        }
    }

    /// Block `block`'s bytes if the kernel has handed it over.
    pub(crate) fn user_block(&mut self, block: usize) -> Option<&[u8]> {
        let status = self.status(block).load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the kernel does not write a block whose status says USER
        // until `release` hands it back, which needs `&mut self`, so no
        // write happens while this borrow lives; in bounds as above.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(block * self.block_size),
                self.block_size,
            )
        })
    }

    /// Hands block `block` back to the kernel.
    pub(crate) fn release(&mut self, block: usize) {
        self.status(block)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; no borrow of it survives
        // `&mut self`.
        unsafe {
            let _ = rustix::mm::munmap(self.map.as_ptr().cast(), self.len);
        }
    }
}

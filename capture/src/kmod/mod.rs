//! The kernel-module source: a generic netlink client of the `icmpmon`
//! family (kmod-hook/). Resolves the family (refusing a module that speaks
//! another protocol version), REGISTERs this socket, turns RECORDS batches
//! into `RawPacket`s and says CLOSE on the way out. While it runs it asks
//! for STATS now and then, so a module that went away without its BYE
//! reaching us (a full socket buffer) still ends the run.

/// The module's wire format, mirrored from `kmod-hook/include/uapi/icmpmon.h`.
pub mod abi;
mod client;
mod source;

pub use client::{KmodClient, KmodError, KmodOptions, KmodStats};
pub use source::{KmodCounters, KmodSource};

//! The BPF source: the kernel hook without a module. BPF netfilter
//! programs (kernel 6.4+, `CONFIG_NETFILTER_BPF_LINK`) at PRE_ROUTING and
//! LOCAL_OUT of both families copy every ICMP packet into a ring buffer in
//! the module's version-2 record layout (decoded by `kmod::abi`), and a
//! `tp_btf/kfree_skb` program adds the ICMP packets the kernel drops in
//! this network namespace, with the kernel's reason (`drops`).
//!
//! Links are owned by file descriptors, nothing is pinned: any exit,
//! SIGKILL included, detaches everything. The programs live in
//! `icmpmon.bpf.c` (built by build.rs with clang, CO-RE).

mod check;
mod counters;
mod names;
mod skel;
mod source;
mod traced;

pub use check::{unavailable, BpfError};
pub use counters::BpfCounters;
pub use source::{BpfOptions, BpfSource};
pub(crate) use traced::WithDrops;

//! The skeleton libbpf-cargo generates from icmpmon.bpf.c (build.rs): its
//! unsafe code is libbpf-rs's.
#![allow(
    unsafe_code,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    missing_debug_implementations
)]
include!(concat!(env!("OUT_DIR"), "/icmpmon.skel.rs"));

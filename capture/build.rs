//! Compiles the BPF source's programs (src/bpf/icmpmon.bpf.c) with clang
//! and generates their libbpf-rs skeleton. CO-RE: the object carries
//! relocations that libbpf resolves against the running kernel's BTF when
//! it loads, so nothing here depends on the build machine's kernel.
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/icmpmon.bpf.c";

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("no BPF target architecture known for {other}"),
        Err(_) => "x86",
    };
    // The system's UAPI headers (linux/bpf.h, linux/types.h) and, through
    // them, the multiarch asm/ headers that `-target bpf` does not search.
    let multiarch = format!(
        "/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args([
            format!("-D__TARGET_ARCH_{arch}"),
            format!("-I{multiarch}"),
            "-Wall".into(),
            "-Werror".into(),
        ])
        .build_and_generate(out.join("icmpmon.skel.rs"))
        .unwrap_or_else(|e| {
            panic!("building {SRC} (needs clang, and libelf-dev, zlib1g-dev, pkgconf for libbpf): {e:#}")
        });
    for path in [
        SRC,
        "src/bpf/kernel.h",
        "../kmod-hook/include/uapi/icmpmon.h",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
}

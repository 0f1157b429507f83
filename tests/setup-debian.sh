#!/usr/bin/env bash
# Installs what building and testing icmpmon needs on Debian 12 (run as root).
# The Rust toolchain itself comes from rustup (cargo must be on PATH).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
	build-essential bc bison flex libelf-dev dwarves kmod xz-utils cpio gzip \
	clang zlib1g-dev pkgconf bpftool \
	busybox-static qemu-system-x86 iproute2 ca-certificates tshark \
	tcpdump iputils-ping iptables nftables tmux debootstrap dkms \
	python3 python3-yaml libcap2-bin util-linux sudo curl prometheus man-db systemd time strace
# clippy and rustfmt are part of the checks.
if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
	rustup component add clippy rustfmt
fi

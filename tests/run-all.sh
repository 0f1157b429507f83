#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/integration tests, then the
# NFQUEUE suite in network namespaces (root, this kernel), then the QEMU
# suite (the kernel module on Debian 6.1 and 6.12 with the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
tests/netns/run.sh
tests/vm/run.sh

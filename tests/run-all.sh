#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/integration tests, then the
# NFQUEUE suite in network namespaces (root, this kernel), then the QEMU
# suite (the kernel module on Debian 6.1 and 6.12 with the real binary).
# Benchmarks run in a short mode and report; only the memory bound of the
# spoofed-flood check can fail (a size, not a timing).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
cargo bench --locked --bench aggregate -- --quick
cargo bench --locked -p icmpmon-tui --bench render -- --quick
cargo run --release --locked -q --example aggregate_rss
tests/netns/run.sh
tests/vm/run.sh

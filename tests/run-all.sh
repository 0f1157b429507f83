#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/integration tests, the
# capture corpus of tcpdump's test suite against tcpdump and tshark, then the
# live-source suites in network namespaces (root, this kernel: NFQUEUE; then
# AF_PACKET, NFLOG, auto and the README's main job; the metrics endpoint
# scraped by a real Prometheus), the live sources under ping -f (a report),
# DKMS builds of the module, the Debian packages (build, install with DKMS,
# the systemd unit, purge), then the QEMU suite (the kernel module on Debian's 6.1, 6.12, 7.2,
# 7.3 and 7.3-rt kernels with the real binary).
# Benchmarks report; none fails on a timing. The criterion ones run in a
# short mode; only the memory bound of the spoofed-flood check can fail (a
# size, not a timing), and the live-source benchmark fails only when a
# monitor cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Plain `cargo test` needs no root, tshark or tmux; the tests that do are
# #[ignore]d with the reason, and run here.
cargo test --workspace --locked -- --include-ignored
tests/corpus.sh
cargo bench --locked --bench aggregate -- --quick
cargo bench --locked -p icmpmon-tui --bench render -- --quick
cargo run --release --locked -q --example aggregate_rss
tests/netns/run.sh
tests/netns/passive.sh
tests/netns/drops.sh
tests/netns/metrics.sh
tests/netns/attribution.sh
tests/netns/soak.sh
tests/bench/sources.sh
tests/bench/metrics.sh
tests/dkms.sh
tests/packages.sh
tests/vm/run.sh

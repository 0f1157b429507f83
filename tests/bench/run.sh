#!/usr/bin/env bash
# tests/bench/run.sh [PACKETS] — benchmarks against peers, in one run; prints
# ratios (not a test: nothing here passes or fails on a timing). A synthetic
# ICMP capture (default 1M packets): icmpmon --source pcap to CSV vs tshark
# -T fields and tcpdump -nn -r, best of 3 each, from the file and through a
# pipe (`cat F |`, the streaming reader). The live sources under ping -f:
# tests/bench/sources.sh.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
packets=${1:-1000000}
work=$(mktemp -d /tmp/icmpmon-bench.XXXXXX)
cleanup() {
	rm -rf "$work"
}
trap cleanup EXIT

cd "$repo"
cargo build --release --locked -q
cargo run --release --locked -q --example gen_icmp_pcap -- "$work/bench.pcap" "$packets"
bin="$repo/target/release/icmpmon"
f="$work/bench.pcap"

# best SECONDS of 3 runs of a command
best() {
	local b=
	for _ in 1 2 3; do
		local t0 t1
		t0=$(date +%s.%N)
		"$@" >/dev/null 2>&1
		t1=$(date +%s.%N)
		b=$(echo "$t0 $t1 ${b:-999999}" | awk '{ d = $2 - $1; print (d < $3 ? d : $3) }')
	done
	echo "$b"
}

tshark_fields="-T fields -e frame.time_epoch -e ip.src -e ip.dst -e ipv6.src -e ipv6.dst \
	-e icmp.type -e icmp.code -e icmpv6.type -e icmpv6.code -e icmp.ident -e icmp.seq"
ti=$(best "$bin" --source "pcap:$f" --csv /dev/null)
# shellcheck disable=SC2086
ts=$(best tshark -n -r "$f" $tshark_fields)
td=$(best tcpdump -nn -r "$f")
pi=$(best sh -c "cat '$f' | '$bin' --source pcap:- --csv /dev/null")
ps=$(best sh -c "cat '$f' | tshark -n -r - $tshark_fields")
pd=$(best sh -c "cat '$f' | tcpdump -nn -r -")
echo "bench: capture of $packets ICMP packets ($(du -h "$f" | cut -f1)), best of 3:"
awk -v i="$ti" -v s="$ts" -v d="$td" -v pi="$pi" -v ps="$ps" -v pd="$pd" -v n="$packets" 'BEGIN {
	printf "bench:   from the file:\n"
	printf "bench:     icmpmon --csv        %7.2f s  %9.0f packets/s\n", i, n / i
	printf "bench:     tshark -T fields     %7.2f s  (icmpmon takes %.3fx its time)\n", s, i / s
	printf "bench:     tcpdump -nn -r       %7.2f s  (icmpmon takes %.3fx its time)\n", d, i / d
	printf "bench:   through a pipe (cat F |):\n"
	printf "bench:     icmpmon --csv        %7.2f s  %9.0f packets/s\n", pi, n / pi
	printf "bench:     tshark -T fields     %7.2f s  (icmpmon takes %.3fx its time)\n", ps, pi / ps
	printf "bench:     tcpdump -nn -r -     %7.2f s  (icmpmon takes %.3fx its time)\n", pd, pi / pd
}'

#!/usr/bin/env bash
# tests/netns/drops.sh — drop tracing on this machine's kernel (root): the
# ICMP packets the kernel drops show as rows with direction drop and the
# kernel's reason, and "why no reply" names it for the unanswered peer.
# a (10.95.1.2) — r (10.95.1.1 | 10.95.2.1) — b (10.95.2.2); icmpmon runs
# in r. Every check prints one "NETNS <name> PASS|FAIL <detail>" line.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "tests/netns/drops.sh: needs root (namespaces, BPF)" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/netns/lib.sh
. "$repo/tests/netns/lib.sh"
bin="$repo/target/debug/icmpmon"
work=$(mktemp -d /tmp/icmpmon-drops.XXXXXX)
a=icmpmon-d-a
r=icmpmon-d-r
b=icmpmon-d-b

cleanup() {
	netns_remove $r $a $b
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

CHECK_KIND=NETNS
# shellcheck source=tests/checks.sh
. "$repo/tests/checks.sh"
in_a() { ip netns exec "$a" "$@"; }
in_r() { ip netns exec "$r" "$@"; }

(cd "$repo" && cargo build --locked -q) || exit 1

for ns in $a $r $b; do
	ip netns del "$ns" 2>/dev/null
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
done
ip link add da0 netns "$a" type veth peer name dr0 netns "$r"
ip link add db0 netns "$b" type veth peer name dr1 netns "$r"
ip -n "$a" addr add 10.95.1.2/24 dev da0
ip -n "$a" addr add fd95:1::2/64 dev da0 nodad
ip -n "$r" addr add 10.95.1.1/24 dev dr0
ip -n "$r" addr add fd95:1::1/64 dev dr0 nodad
ip -n "$r" addr add 10.95.2.1/24 dev dr1
ip -n "$b" addr add 10.95.2.2/24 dev db0
for dev in "$a da0" "$r dr0" "$r dr1" "$b db0"; do
	set -- $dev
	ip -n "$1" link set "$2" up
done
sleep 1

# start_icmpmon NAME ARGS...: in r, CSV to NAME.csv; sets PID once it captures.
start_icmpmon() {
	local name=$1
	shift
	ip netns exec "$r" "$bin" --csv "$work/$name.csv" --echo-timeout 1 "$@" 2>"$work/$name.err" &
	PID=$!
	for _ in $(seq 100); do
		grep -q "capturing from" "$work/$name.err" 2>/dev/null && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/$name.err"
	kill -KILL "$PID" 2>/dev/null
	return 1
}
stop() {
	kill -INT "$1"
	wait "$1"
}
# drop_rows FILE SRC REASON: drop rows of echo requests from SRC for REASON,
# and the functions they name.
drop_rows() {
	awk -F, -v s="$2" -v why="$3" '$3 == "drop" && $6 == s && $10 == "echo-request" && $25 == why { n++; f[$21] = 1 }
		END { fs = ""; for (k in f) fs = fs k " "; printf "%d %s\n", n, fs }' "$1"
}

# --- an nftables rule drops a's pings at r's input ---
in_r nft -f - <<'EOF'
table inet icmpmon_test {
	chain input {
		type filter hook input priority 0;
		ip saddr 10.95.1.2 icmp type echo-request drop
		ip6 saddr fd95:1::2 icmpv6 type echo-request drop
	}
}
EOF
if start_icmpmon nft --source bpf --metrics-listen 127.0.0.1:9797; then
	in_a ping -c 3 -i 0.2 -W 1 10.95.1.1 >/dev/null
	in_a ping -c 2 -i 0.2 -W 1 fd95:1::1 >/dev/null
	sleep 1.5 # past the echo timeout: the requests are lost
	metrics=$(in_r curl -s http://127.0.0.1:9797/metrics)
	stop "$PID"
	rc=$?
	set -- $(drop_rows "$work/nft.csv" 10.95.1.2 NETFILTER_DROP)
	n4=$1 f4=${2:-}
	set -- $(drop_rows "$work/nft.csv" fd95:1::2 NETFILTER_DROP)
	n6=$1
	seen_in=$(awk -F, '$3 == "in" && $6 == "10.95.1.2" && $10 == "echo-request"' "$work/nft.csv" | wc -l)
	if [ "$rc" = 0 ] && [ "$n4" = 3 ] && [ "$n6" = 2 ] && [ "$f4" = nft_do_chain ] && [ "$seen_in" = 3 ]; then
		ok bpf-drop-nft "3 + 2 pings dropped by an nftables rule: drop rows with NETFILTER_DROP in $f4 (and the 3 requests seen in)"
	else
		ko bpf-drop-nft "rc=$rc v4 drops=$n4 [$f4] v6 drops=$n6 in=$seen_in: $(grep ',drop,' "$work/nft.csv" | head -n 3)"
	fi
	why=$(grep -A3 "why no reply" "$work/nft.err" | grep "10.95.1.2 → 10.95.1.1")
	if echo "$why" | grep -q "3 dropped by the kernel; last: echo-request, NETFILTER_DROP in nft_do_chain" &&
		grep -q "10.95.1.2 → 10.95.1.1: 3 req, 0 rep, 3 lost" "$work/nft.err"; then
		ok bpf-why-no-reply-nft "summary: [$(echo "$why" | sed 's/^icmpmon: *//')]"
	else
		ko bpf-why-no-reply-nft "$(grep -e 'why no reply' -e '→' "$work/nft.err")"
	fi
	if echo "$metrics" | grep -q '^icmpmon_drops_total{reason="NETFILTER_DROP"} 5$'; then
		ok bpf-drop-metrics "$(echo "$metrics" | grep '^icmpmon_drops_total' | paste -sd' ')"
	else
		ko bpf-drop-metrics "$(echo "$metrics" | grep icmpmon_drops)"
	fi
else
	ko bpf-drop-nft "icmpmon did not start"
fi

# --- the same beside AF_PACKET: --drops ---
if start_icmpmon packet-drops --source packet --drops; then
	in_a ping -c 2 -i 0.2 -W 1 10.95.1.1 >/dev/null
	sleep 0.5
	stop "$PID"
	rc=$?
	set -- $(drop_rows "$work/packet-drops.csv" 10.95.1.2 NETFILTER_DROP)
	sources=$(awk -F, '$3 == "drop" { print $2 }' "$work/packet-drops.csv" | sort -u | paste -sd,)
	if [ "$rc" = 0 ] && [ "$1" = 2 ] && [ "$sources" = packet ] && grep -q "drops_seen=" "$work/packet-drops.err"; then
		ok packet-drops "--source packet --drops: 2 drop rows with NETFILTER_DROP"
	else
		ko packet-drops "rc=$rc drops=$1 sources=$sources: $(tail -n 3 "$work/packet-drops.err")"
	fi
else
	ko packet-drops "icmpmon did not start"
fi
in_r nft delete table inet icmpmon_test

# --- reverse-path filtering: a pings from an address r routes elsewhere ---
in_r sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.dr0.rp_filter=1
ip -n "$a" addr add 10.95.2.50/32 dev da0
if start_icmpmon rpf --source bpf; then
	in_a ping -c 3 -i 0.2 -W 1 -I 10.95.2.50 10.95.1.1 >/dev/null
	sleep 1.5
	stop "$PID"
	rc=$?
	set -- $(drop_rows "$work/rpf.csv" 10.95.2.50 IP_RPFILTER)
	why=$(grep -A3 "why no reply" "$work/rpf.err" | grep "10.95.2.50 → 10.95.1.1")
	if [ "$rc" = 0 ] && [ "$1" = 3 ] && echo "$why" | grep -q "3 dropped by the kernel; last: echo-request, IP_RPFILTER in "; then
		ok bpf-drop-rpfilter "3 pings from 10.95.2.50 dropped by rp_filter: IP_RPFILTER in ${2:-?}; summary [$(echo "$why" | sed 's/^icmpmon: *//')]"
	else
		ko bpf-drop-rpfilter "rc=$rc drops=$1: $(grep ',drop,' "$work/rpf.csv" | head -n 3); $(grep -A3 'why no reply' "$work/rpf.err")"
	fi
else
	ko bpf-drop-rpfilter "icmpmon did not start"
fi

# --- drops of another namespace are not this monitor's: a's own firewall
# drops its pings to r (a's namespace), while r's rp_filter drops those
# from 10.95.2.50 (r's), in the same run ---
if start_icmpmon otherns --source bpf; then
	ip netns exec "$a" nft -f - <<'EOF'
table inet icmpmon_test {
	chain output {
		type filter hook output priority 0;
		ip saddr 10.95.1.2 icmp type echo-request drop
	}
}
EOF
	in_a ping -c 2 -i 0.2 -W 1 10.95.1.1 >/dev/null 2>&1
	in_a ping -c 2 -i 0.2 -W 1 -I 10.95.2.50 10.95.1.1 >/dev/null
	sleep 0.5
	stop "$PID"
	rc=$?
	theirs=$(awk -F, '$3 == "drop" && $6 == "10.95.1.2"' "$work/otherns.csv" | wc -l)
	ours=$(awk -F, '$3 == "drop" && $6 == "10.95.2.50" && $25 == "IP_RPFILTER"' "$work/otherns.csv" | wc -l)
	ip netns exec "$a" nft delete table inet icmpmon_test
	if [ "$rc" = 0 ] && [ "$theirs" = 0 ] && [ "$ours" = 2 ]; then
		ok bpf-drops-own-namespace "pings dropped in another namespace: no drop row; r's own drops in the same run: $ours"
	else
		ko bpf-drops-own-namespace "rc=$rc drop rows from a's namespace: $theirs; r's own: $ours (want 2)"
	fi
else
	ko bpf-drops-own-namespace "icmpmon did not start"
fi

echo "netns drops: $pass passed, $fail failed"
[ "$fail" = 0 ]

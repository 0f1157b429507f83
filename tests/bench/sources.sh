#!/usr/bin/env bash
# tests/bench/sources.sh [ROUNDS] [SECONDS] — the live sources under a flood
# (root; a report, not a test: nothing here passes or fails on a timing).
# `ping -f -w SECONDS` (default 5) between two namespaces, ROUNDS (default 5)
# interleaved rounds of: no monitor, icmpmon --source packet, --source nflog,
# --source nfqueue, --source bpf, and tcpdump -i IFACE -w /dev/null 'icmp or
# icmp6', each
# watching the flood's target namespace. Per round, the flood rate kept is
# the requests sent with the monitor over those sent without it in the same
# round; the table shows medians, the CPU time per captured packet (user +
# system, from /proc) and what the monitor lost.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/netns/lib.sh
. "$repo/tests/netns/lib.sh"
rounds=${1:-5}
secs=${2:-5}
work=$(mktemp -d /tmp/icmpmon-bench-src.XXXXXX)
mon=icmpmon-s-mon
peer=icmpmon-s-peer
cleanup() {
	netns_teardown "$mon" "$peer"
	rm -rf "$work"
}
trap cleanup EXIT

cd "$repo"
cargo build --release --locked -q
bin="$repo/target/release/icmpmon"
netns_pair "$mon" "$peer" ics0 ics1 10.97.0 fd97

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# start_monitor WHAT LOG: sets PID once the monitor captures.
start_monitor() {
	case $1 in
	tcpdump)
		ip netns exec "$mon" tcpdump -i ics0 -w /dev/null 'icmp or icmp6' 2>"$2" &
		PID=$!
		ready="listening on"
		;;
	*)
		ip netns exec "$mon" "$bin" --source "$1" ${ICMPMON_ARGS:-} --csv /dev/null 2>"$2" &
		PID=$!
		ready="capturing from"
		;;
	esac
	for _ in $(seq 100); do
		grep -q "$ready" "$2" 2>/dev/null && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "bench: $1 did not start: $(cat "$2")" >&2
	kill -KILL "$PID" 2>/dev/null
	wait "$PID" 2>/dev/null
	return 1
}

# One flood; prints "requests_sent captured lost cpu_seconds".
measure() {
	local what=$1 log="$work/$1.$2.err" t0=0 t1=0 sent captured lost
	if [ "$what" != alone ]; then
		start_monitor "$what" "$log" || return 1
		t0=$(ticks "$PID")
	fi
	sent=$(ip netns exec "$peer" ping -f -q -w "$secs" 10.97.0.1 | awk '/packets transmitted/ { print $1 }')
	if [ "$what" = alone ]; then
		echo "$sent 0 0 0"
		return
	fi
	t1=$(ticks "$PID")
	sleep 0.3
	kill -INT "$PID"
	wait "$PID" || true
	case $what in
	tcpdump)
		captured=$(awk '/packets captured/ { print $1 }' "$log")
		lost=$(awk '/dropped by kernel/ { print $1 }' "$log")
		;;
	*)
		captured=$(sed -n 's/.*; \([0-9]*\) rows (.*/\1/p' "$log")
		# Every stage of the "lost:" list, summed.
		lost=$(sed -n 's/.*lost: \([^;]*\);.*/\1/p' "$log" | tr ',' '\n' | awk '{ n += $NF } END { print n + 0 }')
		;;
	esac
	echo "$sent ${captured:-0} ${lost:-0} $(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { print (b - a) / hz }')"
}

whats=${WHATS:-"alone packet nflog nfqueue bpf tcpdump"}
case " $whats " in
*" alone "*) ;;
*) echo "bench: WHATS must include alone (the reference)" >&2 && exit 1 ;;
esac
for r in $(seq "$rounds"); do
	for w in $whats; do
		line=$(measure "$w" "$r") || exit 1
		echo "$r $w $line" >>"$work/results"
	done
done

echo "bench: ping -f -w $secs between namespaces, $rounds interleaved rounds, medians:"
echo "bench: | monitor | flood rate kept | captured/s | lost | CPU per packet |"
echo "bench: |---|---|---|---|---|"
for w in $whats; do
	awk -v w="$w" -v secs="$secs" '
		$2 == "alone" { alone[$1] = $3 }
		$2 == w { sent[$1] = $3; cap[$1] = $4; lost[$1] += $5; cpu[$1] = $6; n++ }
		function median(a,   k, m, i, j, t, v) {
			m = 0
			for (k in a) v[++m] = a[k]
			for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
			return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
		}
		END {
			for (r in sent) {
				kept[r] = sent[r] / alone[r]
				rate[r] = cap[r] / secs
				per[r] = cap[r] > 0 ? cpu[r] * 1e6 / cap[r] : 0
				total += lost[r]
			}
			if (w == "alone")
				printf "bench: | none | 1 (%.0f requests/s) | | | |\n", median(sent) / secs
			else
				printf "bench: | %s | %.2f | %.0f | %d in %d runs | %.2f µs |\n", w, median(kept), median(rate), total, n, median(per)
		}' "$work/results"
done

# bpf against its peer in the same rounds: the share of the flood each
# kept, as a ratio (a report: the hook should cost no more than tcpdump's
# copy of the wire).
if [[ " $whats " == *" bpf "* && " $whats " == *" tcpdump "* ]]; then
	awk '
		$2 == "alone" { alone[$1] = $3 }
		$2 == "bpf" { b[$1] = $3; bl += $5 }
		$2 == "tcpdump" { t[$1] = $3 }
		END {
			for (r in b) { kb += b[r] / alone[r]; kt += t[r] / alone[r]; n++ }
			printf "bench: bpf kept %.2f of the flood, tcpdump %.2f: ratio %.2f; bpf lost %d\n", kb / n, kt / n, (kt ? kb / kt : 0), bl
		}' "$work/results"
fi

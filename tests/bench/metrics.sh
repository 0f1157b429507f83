#!/usr/bin/env bash
# tests/bench/metrics.sh [ROUNDS] [SECONDS] — the cost of the metrics
# endpoint (root; a report, not a test: nothing here fails on a timing).
#  1. Scrape time and size of /metrics with 4096 peer pairs tracked, at
#     --metrics-peers 10 (the default) and 1000: a fresh encoding (one scrape
#     per publication) and a cached one (scrapes between publications), next
#     to Prometheus's own /metrics scraped the same way, as the peer.
#  2. The capture path under `ping -f -w SECONDS` (default 5) between two
#     namespaces, ROUNDS (default 5) interleaved rounds: no monitor, icmpmon
#     --source packet --metrics-listen, and the same scraped every 100 ms;
#     the flood rate kept is the requests sent over those sent without a
#     monitor in the same round (medians).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/netns/lib.sh
. "$repo/tests/netns/lib.sh"
rounds=${1:-5}
secs=${2:-5}
work=$(mktemp -d /tmp/icmpmon-bench-metrics.XXXXXX)
mon=icmpmon-bm-mon
peer=icmpmon-bm-peer
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	netns_teardown "$mon" "$peer"
	rm -rf "$work"
}
trap cleanup EXIT
cd "$repo"
cargo build --release --locked -q
bin="$repo/target/release/icmpmon"

# --- 1. scrape time and size.
python3 - "$work/peers.pcap" <<'EOF'
import struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
def icmp(src, dst, t, seq):
    m = struct.pack("!BBHHH", t, 0, 0, 7, seq) + b"x" * 56
    m = m[:2] + struct.pack("!H", csum(m)) + m[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(m), 0, 0, 64, 1, 0, bytes(src), bytes(dst))
    return ip + m
out = open(sys.argv[1], "wb")
out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
t = 1_000_000
for seq in range(4):
    for i in range(4096):
        peer = [10, 1, i >> 8, i & 0xFF]
        for (s, d, ty, dt) in ((peer, [10, 0, 0, 1], 8, 0), ([10, 0, 0, 1], peer, 0, 100 + i % 5000)):
            p = icmp(s, d, ty, seq)
            ts = t * 1_000_000 + seq * 1_000_000 + i * 100 + dt
            out.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(p), len(p)) + p)
EOF
events=$((4 * 4096 * 2))

# scrapes URL N SPACING: "median_ms bytes" of N scrapes SPACING s apart.
scrapes() {
	for _ in $(seq "$2"); do
		curl -s -o /dev/null -H 'Accept: application/openmetrics-text' \
			-w '%{time_total} %{size_download}\n' "$1"
		sleep "$3"
	done | sort -n | awk '{ t[NR] = $1; b = $2 } END { printf "%.2f %d\n", t[int((NR + 1) / 2)] * 1000, b }'
}

declare -A cold warm series
port=19798
for peers in 10 1000; do
	# A pipe kept open: icmpmon serves until it is closed.
	mkfifo "$work/pipe-$peers"
	"$bin" --source "pcap:$work/pipe-$peers" --headless --metrics-peers "$peers" \
		--metrics-listen "127.0.0.1:$port" 2>"$work/scrape-$peers.err" &
	pid=$!
	pids+=($pid)
	exec 3>"$work/pipe-$peers"
	cat "$work/peers.pcap" >&3
	for _ in $(seq 300); do
		n=$(curl -s "127.0.0.1:$port/metrics" | sed -n 's/^icmpmon_events_total //p')
		[ "${n:-0}" = "$events" ] && break
		sleep 0.1
	done
	[ "${n:-0}" = "$events" ] || { echo "bench: icmpmon did not count the capture: $(cat "$work/scrape-$peers.err")" >&2; exit 1; }
	series[$peers]=$(curl -s "127.0.0.1:$port/metrics" | grep -vc '^#')
	cold[$peers]=$(scrapes "127.0.0.1:$port/metrics" 7 1.15)
	warm[$peers]=$(scrapes "127.0.0.1:$port/metrics" 30 0)
	exec 3>&-
	wait "$pid"
	port=$((port + 1))
done
prometheus --config.file=/dev/null --storage.tsdb.path="$work/tsdb" \
	--web.listen-address=127.0.0.1:19390 >"$work/prometheus.log" 2>&1 &
prom=$!
pids+=($prom)
for _ in $(seq 100); do curl -sf 127.0.0.1:19390/metrics >/dev/null && break; sleep 0.2; done
series[prom]=$(curl -s 127.0.0.1:19390/metrics | grep -vc '^#')
cold[prom]=$(scrapes 127.0.0.1:19390/metrics 7 1.15)
warm[prom]=$(scrapes 127.0.0.1:19390/metrics 30 0)
read -r prom_ms _ <<<"${cold[prom]}"
kill "$prom"
wait "$prom" 2>/dev/null || true

echo "bench: /metrics with 4096 peer pairs tracked (medians; Prometheus's own /metrics as the peer):"
echo "bench: | endpoint | series | bytes | fresh scrape | cached scrape | fresh vs Prometheus |"
echo "bench: |---|---|---|---|---|---|"
for k in 10 1000 prom; do
	read -r cms bytes <<<"${cold[$k]}"
	read -r wms _ <<<"${warm[$k]}"
	name=$([ "$k" = prom ] && echo "prometheus 2.42 (itself)" || echo "icmpmon --metrics-peers $k")
	echo "bench: | $name | ${series[$k]} | $bytes | $cms ms | $wms ms | $(awk -v a="$cms" -v b="$prom_ms" 'BEGIN { printf "%.2f", a / b }') |"
done

# --- 2. the capture path, scraped or not.
netns_pair "$mon" "$peer" ibm0 ibm1 10.98.0 fd98
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# flood WHAT: "requests_sent rows lost".
flood() {
	local what=$1 log="$work/flood.err" pid scraper= sent rows lost
	if [ "$what" != alone ]; then
		ip netns exec "$mon" "$bin" --source packet --csv /dev/null \
			--metrics-listen 127.0.0.1:9798 2>"$log" &
		pid=$!
		for _ in $(seq 100); do grep -q "capturing from" "$log" && break; sleep 0.1; done
		if [ "$what" = scraped ]; then
			ip netns exec "$mon" bash -c 'while :; do curl -s -o /dev/null 127.0.0.1:9798/metrics; sleep 0.1; done' &
			scraper=$!
		fi
	fi
	sent=$(ip netns exec "$peer" ping -f -q -w "$secs" 10.98.0.1 | awk '/packets transmitted/ { print $1 }')
	if [ "$what" = alone ]; then
		echo "$sent 0 0"
		return
	fi
	[ -z "$scraper" ] || { kill "$scraper"; wait "$scraper" 2>/dev/null || true; }
	sleep 0.3
	kill -INT "$pid"
	wait "$pid" || true
	rows=$(sed -n 's/.*; \([0-9]*\) rows (.*/\1/p' "$log")
	lost=$(sed -n 's/.*lost: \([^;]*\);.*/\1/p' "$log" | tr ',' '\n' | awk '{ n += $NF } END { print n + 0 }')
	echo "$sent ${rows:-0} ${lost:-0}"
}
for r in $(seq "$rounds"); do
	for w in alone idle scraped; do
		echo "$r $w $(flood "$w")" >>"$work/floods"
	done
done
echo "bench: ping -f -w $secs between namespaces, icmpmon --source packet --metrics-listen, $rounds rounds, medians:"
echo "bench: | scrapes | flood rate kept | rows/s | lost |"
echo "bench: |---|---|---|---|"
for w in idle scraped; do
	awk -v w="$w" -v secs="$secs" '
		$2 == "alone" { alone[$1] = $3 }
		$2 == w { sent[$1] = $3; rows[$1] = $4; lost += $5 }
		function median(a,   k, m, i, j, t, v) {
			m = 0
			for (k in a) v[++m] = a[k]
			for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
			return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
		}
		END {
			for (r in sent) { kept[r] = sent[r] / alone[r]; rate[r] = rows[r] / secs }
			printf "bench: | %s | %.2f | %.0f | %d |\n", (w == "idle" ? "none" : "every 100 ms"), median(kept), median(rate), lost
		}' "$work/floods"
done

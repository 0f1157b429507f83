#!/usr/bin/env bash
# tests/netns/soak.sh — icmpmon left running under load (root). Two
# namespaces: mon floods peer with `ping -f` and sends UDP datagrams to its
# closed ports (port unreachables quoting local flows keep attribution
# busy) for SOAK_SECONDS (default 60; the benchmarks doc's run is 600),
# while icmpmon (AF_PACKET, CSV, metrics, attribution) has its CSV rotated
# logrotate-style (renamed, then SIGHUP) every 3 s and /metrics scraped
# every second. Checks: exit 0 on SIGINT; resident memory flat after the
# first third (at most +10 %); open descriptors unchanged; the rows of all
# the rotated files together are the rows the summary reports, every one
# complete. Prints "NETNS <name> PASS|FAIL <detail>" lines and a count.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "tests/netns/soak.sh: needs root (namespaces, capture)" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/netns/lib.sh
. "$repo/tests/netns/lib.sh"
# The release build, as a fleet runs it: a debug build falls behind a
# veth flood, and its backlog (bounded by --channel-capacity) is not a leak.
bin="$repo/target/release/icmpmon"
secs=${SOAK_SECONDS:-60}
warm=$((secs / 3))
work=$(mktemp -d /tmp/icmpmon-soak.XXXXXX)
mon=icmpmon-soak-mon
peer=icmpmon-soak-peer
port=9799

cleanup() {
	netns_remove $mon $peer
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

CHECK_KIND=NETNS
# shellcheck source=tests/checks.sh
. "$repo/tests/checks.sh"

(cd "$repo" && cargo build --release --locked -q) || exit 1
netns_pair $mon $peer sk0 sk1 10.96.1 fd96:1

ip netns exec $mon "$bin" --source packet --csv "$work/rows.csv" \
	--metrics-listen 127.0.0.1:$port --summary-json "$work/summary.json" \
	2>"$work/icmpmon.err" &
pid=$!
for _ in $(seq 100); do
	grep -q "capturing from" "$work/icmpmon.err" 2>/dev/null && break
	sleep 0.1
done

ip netns exec $mon ping -f -q -w "$secs" 10.96.1.2 >"$work/ping.out" 2>&1 &
pinger=$!
ip netns exec $mon python3 - "$secs" >"$work/udp.out" 2>&1 <<'PYEOF' &
import socket, sys, time
end = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < end:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"soak", ("10.96.1.2", 40000 + n % 1000))
    time.sleep(0.01)
    s.close()
    n += 1
print(f"datagrams={n}")
PYEOF
udp=$!

# One sample a second: scrape, rotate every third second, then (half a
# second later, nothing in flight) resident memory and descriptors.
rss() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status"; }
# tally FILE: its records (less the header) and incomplete ones, into
# FILE.tally; then the file goes (a flood writes about 30 MB a second).
tally() {
	python3 - "$1" >"$1.tally" <<'PYEOF'
import csv, sys
with open(sys.argv[1], newline="") as f:
    total = bad = 0
    for i, x in enumerate(csv.reader(f)):
        if i == 0 and x and x[0] == "timestamp":
            continue
        total += 1
        bad += len(x) != 25
print(total, bad)
PYEOF
	rm -f "$1"
}
fds() { find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
scrapes=0
scrape_fail=0
rotations=0
: >"$work/samples"
for t in $(seq 1 "$secs"); do
	if ip netns exec $mon curl -sf -o /dev/null "http://127.0.0.1:$port/metrics"; then
		scrapes=$((scrapes + 1))
	else
		scrape_fail=$((scrape_fail + 1))
	fi
	if [ $((t % 3)) = 0 ]; then
		mv "$work/rows.csv" "$work/rows.csv.$t"
		kill -HUP $pid
		rotations=$((rotations + 1))
		# The previous one was reopened away from long ago.
		[ -e "$work/rows.csv.$((t - 3))" ] && tally "$work/rows.csv.$((t - 3))" &
	fi
	sleep 0.5
	kill -0 $pid 2>/dev/null || break
	echo "$t $(rss) $(fds)" >>"$work/samples"
	sleep 0.5
done
wait $pinger $udp
kill -INT $pid
wait $pid
rc=$?
# The tallies still running first: each removes its file when done.
wait
for f in "$work"/rows.csv*; do
	case $f in *.tally) ;; *) tally "$f" ;; esac
done

check exit "SIGINT after ${secs}s: exit $rc" [ "$rc" = 0 ]

# Memory: the largest sample after the first third against the sample
# that ends it; descriptors: the fewest in the last five samples against
# the fewest in the five that end the first third (a reopen or a lookup in
# flight can add one for an instant).
read -r rss0 rssmax fd0 fd1 n < <(awk -v w="$warm" '
	$1 == w { r0 = $2 }
	$1 > w && $2 > rmax { rmax = $2 }
	$1 > w - 5 && $1 <= w && (f0 == "" || $3 < f0) { f0 = $3 }
	{ s[NR] = $3 }
	END {
		f1 = ""
		for (i = NR - 4; i <= NR; i++) if (i > 0 && (f1 == "" || s[i] < f1)) f1 = s[i]
		print r0 + 0, rmax + 0, f0 + 0, f1 + 0, NR
	}' "$work/samples")
flat=no
[ "$rss0" -gt 0 ] && [ "$rssmax" -le $((rss0 * 11 / 10)) ] && flat=yes
check rss "resident $rss0 kB after ${warm}s, at most $rssmax kB after ($n samples)" [ $flat = yes ]
same=no
[ "$fd0" -gt 0 ] && [ "$fd0" = "$fd1" ] && same=yes
check fds "open descriptors $fd0 after ${warm}s, $fd1 at the end" [ $same = yes ]

# Rows: every file's records (less its header), against the summary.
read -r got bad files < <(cat "$work"/*.tally | awk '{ n += $1; b += $2; f++ } END { print n + 0, b + 0, f + 0 }')
want=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["rows"])' "$work/summary.json" 2>/dev/null)
all=no
[ -n "$want" ] && [ "$got" = "$want" ] && [ "$bad" = 0 ] && [ "$got" -gt 1000 ] && all=yes
check rows "$got rows in $files files ($rotations rotations, $bad incomplete), summary says ${want:-nothing}" [ $all = yes ]
answered=no
[ "$scrape_fail" = 0 ] && [ "$scrapes" -ge $((secs - 2)) ] && answered=yes
check scrapes "$scrapes scrapes answered, $scrape_fail failed" [ $answered = yes ]
# Attribution was busy: rows asked about, and owners found.
read -r asked owner lookups < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
a = d["snapshot"]["attribution"]
print(a["asked"], a["owner"], d["lookups"])' "$work/summary.json" 2>/dev/null)
busy=no
[ "${asked:-0}" -gt 1000 ] && [ "${owner:-0}" -gt 0 ] && busy=yes
check attribution "asked ${asked:-?}, owner found ${owner:-?}, ${lookups:-?} socket lookups; $(cat "$work/udp.out")" [ $busy = yes ]
echo "icmpmon: $(tail -n 3 "$work/icmpmon.err" | tr '\n' ' ')"
echo "soak: $pass passed, $fail failed"
[ "$fail" = 0 ]

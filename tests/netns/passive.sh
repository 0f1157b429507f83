#!/usr/bin/env bash
# tests/netns/passive.sh — the passive sources (packet, nflog, bpf) and `auto` on
# this machine's real kernel (root). Three namespaces: a — r — b, r routes
# between them and runs icmpmon; traffic both ways, forwarded through r,
# errors r and b send, MLD. Counts are checked against tshark's count of an
# unfiltered capture of the same traffic, RTTs against ping's own. Every
# check prints one "NETNS <name> PASS|FAIL <detail>" line; the last line
# counts them.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "tests/netns/passive.sh: needs root (namespaces, capture)" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/netns/lib.sh
. "$repo/tests/netns/lib.sh"
TMUX_SERVER=icmpmon-passive
bin="$repo/target/debug/icmpmon"
work=$(mktemp -d /tmp/icmpmon-passive.XXXXXX)
helper="$work/vmhelper"
a=icmpmon-p-a
r=icmpmon-p-r
b=icmpmon-p-b

cleanup() {
	tm kill-server 2>/dev/null
	netns_remove $r $a $b
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

CHECK_KIND=NETNS
# shellcheck source=tests/checks.sh
. "$repo/tests/checks.sh"
in_a() { ip netns exec "$a" "$@"; }
in_r() { ip netns exec "$r" "$@"; }
in_b() { ip netns exec "$b" "$@"; }

(cd "$repo" && cargo build --locked -q) || exit 1
gcc -static -O2 -Wall -Wextra -Werror -o "$helper" "$repo/tests/vm/helper.c" || exit 1
chmod 755 "$work" "$helper"

# --- the topology: a (10.96.1.2) — r (10.96.1.1 | 10.96.2.1) — b (10.96.2.2)
for ns in $a $r $b; do
	ip netns del "$ns" 2>/dev/null
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
done
ip link add pa0 netns "$a" type veth peer name pr0 netns "$r"
ip link add pb0 netns "$b" type veth peer name pr1 netns "$r"
ip -n "$a" addr add 10.96.1.2/24 dev pa0
ip -n "$a" addr add fd96:1::2/64 dev pa0 nodad
ip -n "$r" addr add 10.96.1.1/24 dev pr0
ip -n "$r" addr add fd96:1::1/64 dev pr0 nodad
ip -n "$r" addr add 10.96.2.1/24 dev pr1
ip -n "$r" addr add fd96:2::1/64 dev pr1 nodad
ip -n "$b" addr add 10.96.2.2/24 dev pb0
ip -n "$b" addr add fd96:2::2/64 dev pb0 nodad
in_r sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
for dev in "$a pa0" "$r pr0" "$r pr1" "$b pb0"; do
	set -- $dev
	ip -n "$1" link set "$2" up
done
ip -n "$a" route add default via 10.96.1.1
ip -n "$a" -6 route add default via fd96:1::1
ip -n "$b" route add default via 10.96.2.1
ip -n "$b" -6 route add default via fd96:2::1
sleep 3 # the MLD reports of link-up go by before any capture

# start_icmpmon NAME SOURCE [ARGS]: in r; sets PID once it captures.
start_icmpmon() {
	local name=$1 source=$2
	shift 2
	ip netns exec "$r" "$bin" --source "$source" --csv "$work/$name.csv" "$@" 2>"$work/$name.err" &
	PID=$!
	for _ in $(seq 100); do
		grep -q "capturing from" "$work/$name.err" 2>/dev/null && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/$name.err"
	kill -KILL "$PID" 2>/dev/null
	wait "$PID" 2>/dev/null
	return 1
}

# stop PID [SIGNAL]: SIGINT (or SIGNAL), then its exit status; SIGKILL after
# 15 s (status 137), so a hung stop fails a check instead of the suite.
stop() {
	kill -"${2:-INT}" "$1"
	for _ in $(seq 150); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null
	wait "$1"
}

rules_left() {
	{
		for t in raw mangle; do in_r iptables-save -t $t; in_r ip6tables-save -t $t; done
		in_r nft list ruleset 2>/dev/null
	} | grep -ci icmpmon
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# The traffic of one run. ping's own RTTs go to $work/$1.ping.
traffic() {
	in_a ping -c 3 -i 0.2 10.96.1.1 >/dev/null
	in_a ping -c 3 -i 0.2 fd96:1::1 >/dev/null
	# r's own pings, answered 20 ms late by a responder in a (this kernel
	# has no netem): long enough that a wrong pairing cannot pass.
	in_a sysctl -qw net.ipv4.icmp_echo_ignore_all=1 net.ipv6.icmp.echo_ignore_all=1
	ip netns exec "$a" python3 "$repo/tests/netns/slow_echo.py" 20 &
	local slow=$!
	# Its raw sockets open (local "port" = protocol 1 and 58) before the
	# first ping: a slow interpreter start would lose requests otherwise.
	for _ in $(seq 100); do
		in_a grep -q ':0001 ' /proc/net/raw && in_a grep -q ':003A ' /proc/net/raw6 && break
		sleep 0.05
	done
	in_r ping -c 5 -i 0.2 10.96.1.2 >"$work/$1.ping"
	in_r ping -c 5 -i 0.2 fd96:1::2 >>"$work/$1.ping"
	kill "$slow"
	wait "$slow" 2>/dev/null
	in_a sysctl -qw net.ipv4.icmp_echo_ignore_all=0 net.ipv6.icmp.echo_ignore_all=0
	in_a ping -c 3 -i 0.2 10.96.2.2 >/dev/null # forwarded
	in_a ping -c 3 -i 0.2 fd96:2::2 >/dev/null
	in_a ping -c 1 -t 1 -W 1 10.96.2.77 >/dev/null # r: time exceeded
	in_a "$helper" udp 10.96.1.1 33434           # r: port unreachable
	in_a "$helper" udp fd96:1::1 33435
	in_a "$helper" udp 10.96.2.2 33436 # b's error, forwarded
	# MLD (behind a hop-by-hop header): a joins a group, then so does r.
	ip -n "$a" addr add fd96:1::77/64 dev pa0 nodad
	ip -n "$r" addr add fd96:2::77/64 dev pr1 nodad
	sleep 1.5
	ip -n "$a" addr del fd96:1::77/64 dev pa0
	ip -n "$r" addr del fd96:2::77/64 dev pr1
	sleep 1.5
}

# r's own addresses of one family (link-local ones too), as a tshark set.
r_addrs() { # inet|inet6
	ip -n "$r" -o addr show | awk -v f="$1" '$3 == f { split($4, p, "/"); print p[1] }' | paste -sd,
}

# Counting happens inside a window that both captures cover, since ND and
# MLD go on by themselves: epoch seconds for tshark, RFC 3339 for the CSV
# (fixed width, UTC: its text order is time order).
now() { date +%s.%N; }
rfc3339() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%S.%NZ; }
rows_within() { # FILE T0 T1 [AWK CONDITION]
	awk -F, -v t0="$(rfc3339 "$2")" -v t1="$(rfc3339 "$3")" "NR > 1 && \$1 >= t0 && \$1 <= t1 && (${4:-1})" "$1" | wc -l
}

# bpf_left: icmpmon's BPF programs still loaded (they go with their last
# link and descriptor; the kernel frees them shortly after the exit).
bpf_left() {
	local n
	for _ in $(seq 30); do
		n=$(bpftool prog show 2>/dev/null | grep -c 'name icmpmon_')
		[ "$n" = 0 ] && break
		sleep 0.1
	done
	echo "$n"
}

# --- each source against tshark, RTTs against ping ---
for source in packet nflog bpf; do
	ip netns exec "$r" tcpdump -i any -U -w "$work/$source.pcap" 2>/dev/null &
	dump=$!
	sleep 1
	if ! start_icmpmon "$source" "$source" --write "$work/$source.saved.pcapng"; then
		ko "$source-traffic" "icmpmon did not start"
		kill "$dump"
		continue
	fi
	caps=$(awk '/^CapEff/ { print $2 }' "/proc/$PID/status")
	sleep 0.5
	t0=$(now)
	traffic "$source"
	t1=$(now)
	sleep 0.5
	stop "$PID"
	rc=$?
	sleep 0.5
	kill -INT "$dump"
	wait "$dump" 2>/dev/null
	f="$work/$source.csv"
	pcap="$work/$source.pcap"
	v4=$(r_addrs inet)
	v6=$(r_addrs inet6)
	# AF_PACKET sees what tcpdump sees: a forwarded packet on both of its
	# interfaces. The netfilter hooks (nflog, bpf) see it once, at
	# prerouting: tshark's count without the forwarded packets' leaving
	# copies (sll.pkttype 4, not from r). Drop rows are second sightings:
	# not counted here.
	window="frame.time_epoch >= $t0 and frame.time_epoch <= $t1"
	all=$(tshark -n -r "$pcap" -Y "(icmp or icmpv6) and $window" 2>/dev/null | wc -l)
	fwd_out=$(tshark -n -r "$pcap" -Y "(icmp or icmpv6) and $window and sll.pkttype == 4 and !(ip.src in {$v4} or ipv6.src in {$v6})" 2>/dev/null | wc -l)
	mld=$(tshark -n -r "$pcap" -Y "icmpv6.type == 143 and $window" 2>/dev/null | wc -l)
	if [ "$source" = packet ]; then want=$all; else want=$((all - fwd_out)); fi
	got=$(rows_within "$f" "$t0" "$t1" '$3 != "drop"')
	got_mld=$(rows_within "$f" "$t0" "$t1" '$8 == 143 && $3 != "drop"')
	exceeded=$(awk -F, '$10 == "ttl-exceeded"' "$f" | wc -l)
	unreach=$(awk -F, '$10 == "port-unreachable"' "$f" | wc -l)
	wrong_source=$(awk -F, -v s="$source" 'NR > 1 && $2 != s' "$f" | wc -l)
	if [ "$rc" = 0 ] && [ "$got" = "$want" ] && [ "$wrong_source" = 0 ] && [ "$mld" -gt 0 ] && [ "$got_mld" = "$mld" ] &&
		[ "$exceeded" -gt 0 ] && [ "$unreach" -gt 0 ]; then
		ok "$source-traffic" "$got rows = tshark $want (all $all, forwarded leaving $fwd_out; MLD $got_mld/$mld, ttl-exceeded $exceeded, port-unreachable $unreach)"
	else
		ko "$source-traffic" "rc=$rc rows=$got tshark=$want (all $all fwd_out $fwd_out) mld=$got_mld/$mld exceeded=$exceeded unreach=$unreach: $(tail -n 2 "$work/$source.err")"
	fi
	# --write (issue 20): the packets kept, one per row (drops are not
	# written again), read back by tshark and tcpdump, with each row's
	# direction in the packet's flags.
	saved=$work/$source.saved.pcapng
	rows=$(awk -F, 'NR > 1 && $3 != "drop"' "$f" | wc -l)
	by_tshark=$(tshark -n -r "$saved" 2>/dev/null | wc -l)
	by_tcpdump=$(tcpdump -nn -r "$saved" 2>/dev/null | wc -l)
	t_in=$(tshark -n -r "$saved" -Y 'frame.packet_flags_direction == 1' 2>/dev/null | wc -l)
	t_out=$(tshark -n -r "$saved" -Y 'frame.packet_flags_direction == 2' 2>/dev/null | wc -l)
	c_in=$(awk -F, 'NR > 1 && $3 == "in"' "$f" | wc -l)
	c_out=$(awk -F, 'NR > 1 && $3 == "out"' "$f" | wc -l)
	if [ "$rows" -gt 0 ] && [ "$by_tshark" = "$rows" ] && [ "$by_tcpdump" = "$rows" ] &&
		[ "$t_in" = "$c_in" ] && [ "$t_out" = "$c_out" ] && grep -q "$rows packets saved" "$work/$source.err"; then
		ok "$source-write" "--write: $rows packets, read back by tshark and tcpdump; in $t_in, out $t_out as the rows say"
	else
		ko "$source-write" "rows $rows, tshark $by_tshark, tcpdump $by_tcpdump, in $t_in/$c_in, out $t_out/$c_out: $(grep -o '[0-9]* packets saved' "$work/$source.err")"
	fi
	# ping's time= per (family, seq) against the rtt_us of the reply row
	# that came in.
	bad=$(awk -F, -v pingf="$work/$source.ping" '
		BEGIN {
			while ((getline l < pingf) > 0) {
				if (l ~ /^PING/) fam = (l ~ /fd96/) ? 6 : 4
				if (match(l, /icmp_seq=[0-9]+/)) {
					s = substr(l, RSTART + 9, RLENGTH - 9)
					match(l, /time=[0-9.]+/)
					want[fam "/" s] = substr(l, RSTART + 5, RLENGTH - 5)
					n++
				}
			}
		}
		$10 == "echo-reply" && $3 == "in" && ($6 == "10.96.1.2" || $6 == "fd96:1::2") && $15 != "" {
			k = $5 "/" $12
			if (k in want) {
				d = $15 / 1000 - want[k]; if (d < 0) d = -d; if (d > max) max = d; seen[k] = 1
				ds[++nd] = d
				if (least == "" || $15 + 0 < least) least = $15 + 0
			}
		}
		END {
			m = 0
			for (k in want) if (!(k in seen)) m++
			# The median deviation (insertion sort: ten values).
			for (i = 2; i <= nd; i++) for (j = i; j > 1 && ds[j - 1] > ds[j]; j--) { t = ds[j]; ds[j] = ds[j - 1]; ds[j - 1] = t }
			printf "%d %d %.3f %d %.3f\n", n, m, max, least, (nd ? ds[int((nd + 1) / 2)] : 99)
		}' "$f")
	set -- $bad
	# The packet and bpf sources (kernel stamps both ways): every reply
	# within 1 ms of ping's time=. NFLOG stamps no time at output: an `out` request's
	# time is when icmpmon receives it, a wake-up late, which on a busy
	# machine reaches milliseconds now and then (CI saw 1 and 4 ms): the
	# median within 1 ms, the worst within 10 ms.
	if [ "$source" = nflog ]; then
		close=$(awk -v m="$5" -v w="$3" 'BEGIN { exit !(m < 1.0 && w < 10.0) }' && echo y)
	else
		close=$(awk -v w="$3" 'BEGIN { exit !(w < 1.0) }' && echo y)
	fi
	if [ "$1" = 10 ] && [ "$2" = 0 ] && [ "$4" -ge 15000 ] && [ "$close" = y ]; then
		ok "$source-rtt" "10 replies of about 20 ms: icmpmon's rtt_us within $3 ms of ping's time= (median $5 ms)"
	else
		ko "$source-rtt" "pings=$1 unmatched=$2 worst=$3 ms median=$5 ms shortest rtt_us=$4"
	fi
	# Forwarded pings: two sightings each (packet), one request counted.
	if grep -q "10.96.1.2 → 10.96.2.2: 3 req, 3 rep, 0 lost" "$work/$source.err" &&
		grep -q "fd96:1::2 → fd96:2::2: 3 req, 3 rep, 0 lost" "$work/$source.err"; then
		# AF_PACKET: in on pr0 and out on pr1; the hooks: once, at pr0.
		if [ "$source" = packet ]; then want="3 pr0;3 pr1;"; else want="3 pr0;"; fi
		sights=$(awk -F, '$3 != "drop" && $6 == "10.96.1.2" && $7 == "10.96.2.2" && $10 == "echo-request" { print $4 }' "$f" | sort | uniq -c | awk '{ printf "%s %s;", $1, $2 }')
		# One round trip per reply, however often it was seen (issue 20.6).
		rtts=$(awk -F, '$6 == "10.96.2.2" && $7 == "10.96.1.2" && $10 == "echo-reply" && $15 != ""' "$f" | wc -l)
		if [ "$sights" = "$want" ] && [ "$rtts" = 3 ]; then
			ok "$source-forwarded" "3 requests counted once each; request rows per interface: $sights; 3 replies with an rtt_us"
		else
			ko "$source-forwarded" "request rows per interface: [$sights], want [$want]; replies with an rtt_us: $rtts, want 3"
		fi
	else
		ko "$source-forwarded" "$(grep ' → ' "$work/$source.err")"
	fi
	# r answers a's pings: each reply r sends comes after the request it
	# answers and has a round trip of r's own answering time, not one
	# paired with another request. (NFLOG's `in` group sends batches and
	# its `out` group at once: the reply reached icmpmon first.)
	answered=$(awk -F, '
		$10 == "echo-request" && $3 == "in" && ($6 == "10.96.1.2" && $7 == "10.96.1.1" || $6 == "fd96:1::2" && $7 == "fd96:1::1") { asked[$5 "/" $11 "/" $12] = 1 }
		$10 == "echo-reply" && $3 == "out" && ($7 == "10.96.1.2" && $6 == "10.96.1.1" || $7 == "fd96:1::2" && $6 == "fd96:1::1") {
			n++
			if (($5 "/" $11 "/" $12) in asked && $15 != "" && $15 < 20000) good++
		}
		END { printf "%d %d\n", n, good }' "$f")
	set -- $answered
	if [ "$1" = 6 ] && [ "$2" = 6 ] &&
		grep -q "10.96.1.2 → 10.96.1.1: 3 req, 3 rep, 0 lost" "$work/$source.err" &&
		grep -q "fd96:1::2 → fd96:1::1: 3 req, 3 rep, 0 lost" "$work/$source.err"; then
		ok "$source-responder" "6 replies r sent, each after its request's row, with an rtt_us under 20 ms; 3 of 3 answered per family"
	else
		ko "$source-responder" "replies $1, after their request with an rtt_us under 20 ms: $2 (want 6 and 6): $(grep -E '→ 10.96.1.1|→ fd96:1::1|unsolicited' "$work/$source.err")"
	fi
	if [ "$source" = packet ]; then
		if [ "$caps" = 0000000000000000 ]; then ok packet-privileges "CapEff $caps once open"; else ko packet-privileges "CapEff $caps"; fi
	elif [ "$source" = bpf ]; then
		# The ring buffer and the counters are read through descriptors
		# opened before: no capability is kept. Links die with them.
		n=$(bpf_left)
		if [ "$caps" = 0000000000000000 ] && [ "$n" = 0 ]; then
			ok bpf-privileges-links "CapEff $caps once open; after SIGINT no icmpmon BPF program is loaded"
		else
			ko bpf-privileges-links "CapEff $caps; programs left: $n"
		fi
	else
		n=$(rules_left)
		if [ "$n" = 0 ]; then ok nflog-sigint-rules "no icmpmon rule left"; else ko nflog-sigint-rules "$n lines"; fi
	fi
done

# --- packet -i pr1: the kernel filter keeps that interface only ---
if start_icmpmon iface packet -i pr1; then
	in_a ping -c 3 -i 0.2 10.96.2.2 >/dev/null # forwarded: leaves by pr1
	in_a ping -c 2 -i 0.2 10.96.1.1 >/dev/null # r's own, on pr0: not shown
	sleep 0.3
	stop "$PID"
	rc=$?
	echoes=$(awk -F, '($10 == "echo-request" || $10 == "echo-reply") && $4 == "pr1"' "$work/iface.csv" | wc -l)
	others=$(awk -F, 'NR > 1 && $4 != "pr1"' "$work/iface.csv" | wc -l)
	if [ "$rc" = 0 ] && [ "$echoes" = 6 ] && [ "$others" = 0 ]; then
		ok packet-interface "-i pr1: the 6 forwarded echo messages on pr1, no row from another interface"
	else
		ko packet-interface "rc=$rc echoes on pr1=$echoes rows elsewhere=$others"
	fi
else
	ko packet-interface "icmpmon did not start"
fi

# --- nflog and bpf: records come defragmented (the module's view), with
# no connection tracking ---
for source in nflog bpf; do
	if start_icmpmon "frag-$source" "$source"; then
		in_a ping -c 2 -i 0.2 -s 3000 10.96.1.1 >/dev/null
		in_a ping -c 2 -i 0.2 -s 3000 fd96:1::1 >/dev/null
		sleep 0.3
		stop "$PID"
		whole=$(awk -F, '$3 == "in" && (($10 == "echo-request" && $14 == 3028 && $5 == 4) || ($10 == "echo-request" && $14 == 3048 && $5 == 6))' "$work/frag-$source.csv" | wc -l)
		ct=$(in_r cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo 0)
		if [ "$whole" = 4 ] && grep -q "parse errors 0" "$work/frag-$source.err" && [ "$ct" = 0 ]; then
			ok "$source-defragmented" "ping -s 3000: 4 whole requests (3028/3048 bytes), one row each, no parse errors, $ct conntrack entries"
		else
			ko "$source-defragmented" "whole=$whole ct=$ct: $(grep -e 'parse' "$work/frag-$source.err")"
		fi
	else
		ko "$source-defragmented" "icmpmon did not start"
	fi
done

# --- packet: a full ring's drops are counted (PACKET_STATISTICS): with a
# 32 KiB ring and icmpmon stopped, 3000 pings; the echo rows plus the ring's
# loss cover every echo r's stack took in and answered ---
echoes_in_out() {
	in_r awk '/^Icmp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["InEchos"] + $c["OutEchoReps"] }' /proc/net/snmp
}
# blast_stopped NAME: 3000 pings at r while icmpmon (PID) is stopped, then
# two more once it runs again (they show a gap in NFLOG's numbering), then a
# stop. Sets rc, seen (echo rows) and kernel (echoes r's stack counted).
blast_stopped() {
	local before after
	before=$(echoes_in_out)
	kill -STOP "$PID"
	in_a python3 "$repo/tests/netns/blast.py" 10.96.1.1 3000
	sleep 0.5
	kill -CONT "$PID"
	sleep 0.5
	in_a ping -c 2 -i 0.2 10.96.1.1 >/dev/null
	sleep 0.5
	after=$(echoes_in_out)
	stop "$PID"
	rc=$?
	seen=$(awk -F, '$10 == "echo-request" || $10 == "echo-reply"' "$work/$1.csv" | wc -l)
	kernel=$((after - before))
}
if start_icmpmon ring packet --ring-block-size 4096 --ring-frames 16; then
	blast_stopped ring
	lost=$(sed -n 's/.*lost: ring \([0-9]*\),.*/\1/p' "$work/ring.err")
	# At most a few more: ND and MLD packets lost in the ring too.
	if [ "$rc" = 0 ] && [ -n "$lost" ] && [ "$lost" -gt 0 ] && [ $((seen + lost)) -ge "$kernel" ] &&
		[ $((seen + lost)) -le $((kernel + 20)) ] && [ "$kernel" -ge 3000 ]; then
		ok packet-ring-drops "r's stack: $kernel echo requests + replies; icmpmon: $seen rows + $lost counted lost in the ring"
	else
		ko packet-ring-drops "rc=$rc kernel=$kernel seen=$seen lost=[$lost]: $(grep 'lost:' "$work/ring.err")"
	fi
else
	ko packet-ring-drops "icmpmon did not start"
fi

# --- nflog: what the socket could not take is counted (sequence gaps) ---
if start_icmpmon logloss nflog --socket-buffer 65536; then
	# The two later pings show the gap in the numbering; what no later
	# packet follows would be found by the rule counters at the end.
	blast_stopped logloss
	gaps=$(sed -n 's/.*lost: log_sequence \([0-9]*\), log_unaccounted \([0-9]*\),.*/\1 \2/p' "$work/logloss.err")
	set -- $gaps
	# Every loss is followed by later packets: all of it shows as gaps.
	if [ "$rc" = 0 ] && [ "${1:-0}" -gt 0 ] && [ "${2:-}" = 0 ] && [ $((seen + $1)) -ge "$kernel" ] &&
		[ $((seen + $1)) -le $((kernel + 20)) ] && [ "$kernel" -ge 3004 ]; then
		ok nflog-losses "r's stack: $kernel echo requests + replies; icmpmon: $seen rows + ${1} sequence gaps + ${2} unaccounted"
	else
		ko nflog-losses "rc=$rc kernel=$kernel seen=$seen gaps=[$gaps]: $(grep 'lost:' "$work/logloss.err")"
	fi
else
	ko nflog-losses "icmpmon did not start"
fi

# --- nflog under a flood both ways: pairing in the hooks' order ---
# r answers a's ping -f, then floods a itself. Both of its log groups
# batch then, and their batches come at their own times; each reply must
# still pair with its own request.
if start_icmpmon floodorder nflog; then
	in_a ping -f -c 20000 10.96.1.1 >/dev/null
	in_r ping -f -c 20000 10.96.1.2 >/dev/null
	sleep 0.5
	stop "$PID"
	rc=$?
	e=$work/floodorder.err
	if [ "$rc" = 0 ] && grep -q "10.96.1.2 → 10.96.1.1: 20000 req, 20000 rep, 0 lost" "$e" &&
		grep -q "10.96.1.1 → 10.96.1.2: 20000 req, 20000 rep, 0 lost" "$e" &&
		grep -q "0 late, 0 duplicate replies, 0 unsolicited" "$e" && grep -q "out_batched_ms=[1-9]" "$e"; then
		ok nflog-flood-order "ping -f of 20000 each way, the out group batched: every request paired with its reply, none unsolicited or duplicate"
	else
		ko nflog-flood-order "rc=$rc: $(grep -E 'echo:|→ 10.96|lost:|out_batched' "$e")"
	fi
else
	ko nflog-flood-order "icmpmon did not start"
fi

# --- SIGTERM: a clean stop, nothing left ---
for source in packet nflog bpf; do
	if start_icmpmon "term-$source" "$source"; then
		stop "$PID" TERM
		rc=$?
		n=$(rules_left)
		progs=$(bpf_left)
		if [ "$rc" = 0 ] && [ "$n" = 0 ] && [ "$progs" = 0 ]; then ok "$source-sigterm" "exit 0, nothing left"; else ko "$source-sigterm" "rc=$rc rules=$n bpf programs=$progs"; fi
	else
		ko "$source-sigterm" "icmpmon did not start"
	fi
done

# --- privilege separation (nflog): the monitor holds no capability in any
# thread and runs under seccomp; its rules helper keeps CAP_NET_ADMIN and
# CAP_NET_RAW (0x3000) and nothing else. Killed, the monitor leaves no rule:
# its helper removes them at once ---
if start_icmpmon killed nflog; then
	rhelper=$(pgrep -P "$PID" -f 'privsep-helper rules')
	mon_caps=$(for t in /proc/"$PID"/task/*; do awk '/^(CapPrm|CapEff|Seccomp):/ { printf "%s%s ", $1, $2 }' "$t/status"; echo; done | sort | uniq -c | tr '\n' ';')
	helper_caps=$(awk '/^(CapPrm|CapEff):/ { printf "%s%s ", $1, $2 }' "/proc/${rhelper:-0}/status" 2>/dev/null)
	if [ -n "$mon_caps" ] && ! echo "$mon_caps" | tr ';' '\n' | grep -v '^$' | grep -vq 'CapPrm:0000000000000000 CapEff:0000000000000000 Seccomp:2 $' &&
		[ "$helper_caps" = "CapPrm:0000000000003000 CapEff:0000000000003000 " ]; then
		ok nflog-privsep "monitor threads: $mon_caps rules helper $rhelper: $helper_caps"
	else
		ko nflog-privsep "monitor threads: [$mon_caps] rules helper ${rhelper:-none}: [$helper_caps]"
	fi
	before=$(rules_left)
	kill -KILL "$PID"
	wait "$PID" 2>/dev/null
	for _ in $(seq 50); do
		[ "$(rules_left)" = 0 ] && ! alive "${rhelper:-0}" && break
		sleep 0.1
	done
	left=$(rules_left)
	if [ "$before" -gt 0 ] && [ "$left" = 0 ] && ! alive "${rhelper:-0}"; then
		ok nflog-sigkill-helper "monitor SIGKILLed: its rules helper removed the rules ($before lines) and ended"
	else
		ko nflog-sigkill-helper "rules before $before, after $left; helper ${rhelper:-none} $(alive "${rhelper:-0}" && echo running)"
	fi
else
	ko nflog-privsep "icmpmon did not start"
fi

# --- SIGKILL of monitor and helper (nflog): ICMP is not delayed by the
# rules left; the next start removes them ---
if start_icmpmon killed2 nflog; then
	kill -KILL $(pgrep -P "$PID") "$PID"
	wait "$PID" 2>/dev/null
	stale=$(rules_left)
	worst=$(in_a ping -c 5 -i 0.2 -W 1 10.96.1.1 | sed -n 's|.*= [0-9.]*/[0-9.]*/\([0-9.]*\)/.*|\1|p')
	if [ "$stale" -gt 0 ] && [ -n "$worst" ] && awk -v w="$worst" 'BEGIN { exit !(w < 20) }'; then
		ok nflog-sigkill "rules left ($stale lines), pings answered, slowest $worst ms"
	else
		ko nflog-sigkill "stale=$stale worst=[$worst]"
	fi
	if start_icmpmon restart nflog; then
		in_a ping -c 2 -i 0.2 10.96.1.1 >/dev/null
		sleep 0.3
		stop "$PID"
		rc=$?
		if grep -q "removed stale" "$work/restart.err" && [ "$rc" = 0 ] && [ "$(rules_left)" = 0 ] &&
			[ "$(awk -F, '$10 == "echo-request"' "$work/restart.csv" | wc -l)" = 2 ]; then
			ok nflog-stale-cleanup "$(grep -c 'removed stale' "$work/restart.err") stale rule sets removed at start"
		else
			ko nflog-stale-cleanup "rc=$rc: $(cat "$work/restart.err")"
		fi
	else
		ko nflog-stale-cleanup "restart failed"
	fi
else
	ko nflog-sigkill "icmpmon did not start"
fi

# --- SIGKILL (bpf): links are owned by descriptors, nothing is pinned:
# nothing stays attached ---
if start_icmpmon killed-bpf bpf; then
	before=$(bpftool link show 2>/dev/null | grep -c .)
	kill -KILL "$PID"
	wait "$PID" 2>/dev/null
	n=$(bpf_left)
	after=$(bpftool link show 2>/dev/null | grep -c .)
	if [ "$n" = 0 ] && [ "$after" -lt "$before" ]; then
		ok bpf-sigkill "no icmpmon BPF program or link left (bpftool link: $before lines while running, $after after)"
	else
		ko bpf-sigkill "programs left $n; bpftool link lines $before → $after"
	fi
else
	ko bpf-sigkill "icmpmon did not start"
fi

# --- two monitors at once, each source: both see everything ---
for source in packet nflog bpf; do
	p1=
	if start_icmpmon "one-$source" "$source" && p1=$PID && start_icmpmon "two-$source" "$source"; then
		p2=$PID
		in_a ping -c 3 -i 0.2 10.96.1.1 >/dev/null
		in_a ping -c 3 -i 0.2 fd96:1::1 >/dev/null
		sleep 0.5
		stop "$p2"
		rc2=$?
		stop "$p1"
		rc1=$?
		n1=$(awk -F, '$3 != "drop" && ($10 == "echo-request" || $10 == "echo-reply")' "$work/one-$source.csv" | wc -l)
		n2=$(awk -F, '$3 != "drop" && ($10 == "echo-request" || $10 == "echo-reply")' "$work/two-$source.csv" | wc -l)
		if [ "$rc1$rc2" = 00 ] && [ "$n1" = 12 ] && [ "$n2" = 12 ] && [ "$(rules_left)" = 0 ]; then
			ok "$source-two-monitors" "both saw the 12 echo messages; $(grep -o 'capturing from [^,]*([^)]*)' "$work/two-$source.err")"
		else
			ko "$source-two-monitors" "rc=$rc1/$rc2 seen $n1/$n2 rules=$(rules_left): $(tail -n 1 "$work/two-$source.err")"
		fi
	else
		ko "$source-two-monitors" "a monitor did not start"
		[ -n "$p1" ] && stop "$p1"
	fi
done

# --- idle costs nothing: no busy-wait (NFQUEUE's short spin after a burst
# included) ---
for source in packet nflog nfqueue bpf; do
	if start_icmpmon "idle-$source" "$source"; then
		sleep 0.5
		t0=$(cpu_ticks "$PID")
		sleep 3
		t1=$(cpu_ticks "$PID")
		stop "$PID"
		# A busy wait takes about 300 ticks; idle, a debug build takes
		# 1 or 2 (its 100 ms ticks), and 4 was seen once on a loaded
		# machine.
		if [ $((t1 - t0)) -le 6 ]; then
			ok "$source-idle" "$((t1 - t0)) CPU ticks in 3 s idle"
		else
			ko "$source-idle" "$((t1 - t0)) CPU ticks in 3 s idle"
		fi
	else
		ko "$source-idle" "icmpmon did not start"
	fi
done

# --- without privileges: the missing capability is named ---
for pair in "packet CAP_NET_RAW" "nflog CAP_NET_ADMIN" "bpf CAP_BPF and CAP_NET_ADMIN"; do
	src=${pair%% *}
	need=${pair#* }
	in_r "$helper" runas 65534 "$bin" --source "$src" --duration 3 --csv - >/dev/null 2>"$work/unpriv-$src.err"
	rc=$?
	set -- "$src" "$need"
	if [ "$rc" = 1 ] && grep -q "needs $2" "$work/unpriv-$1.err" && [ "$(rules_left)" = 0 ]; then
		ok "$1-unprivileged" "exit 1: $(tail -n 1 "$work/unpriv-$1.err" | cut -c1-100)"
	else
		ko "$1-unprivileged" "rc=$rc: $(cat "$work/unpriv-$1.err")"
	fi
done

# --- auto without the module: bpf where the kernel and the capabilities
# allow (this kernel, root), else packet; it says which and why ---
if [ -e /sys/module/icmpmon ]; then
	echo "NETNS auto SKIP the module is loaded here (the QEMU suite covers auto → kmod)"
else
	# auto_run NAME [PREFIX...]: icmpmon with --source auto in r, 2 pings.
	auto_run() {
		local name=$1
		shift
		ip netns exec "$r" "$@" "$bin" --csv "$work/$name.csv" 2>"$work/$name.err" &
		PID=$!
		for _ in $(seq 50); do grep -q "capturing from" "$work/$name.err" && break; sleep 0.1; done
		in_a ping -c 2 -i 0.2 10.96.1.1 >/dev/null
		sleep 0.3
		stop "$PID"
	}
	auto_run auto
	rc=$?
	if [ "$rc" = 0 ] && grep -q "not loaded; using BPF netfilter programs" "$work/auto.err" &&
		grep -q "capturing from bpf" "$work/auto.err" &&
		[ "$(awk -F, 'NR > 1 && $2 == "bpf" && $3 == "in" && $10 == "echo-request"' "$work/auto.csv" | wc -l)" = 2 ]; then
		ok auto-bpf "$(head -n 1 "$work/auto.err")"
	else
		ko auto-bpf "rc=$rc: $(cat "$work/auto.err")"
	fi
	# Root without CAP_BPF (a container's root, say): AF_PACKET, and why.
	auto_run auto-nobpf setpriv --bounding-set -bpf,-sys_admin,-perfmon --inh-caps -bpf,-sys_admin,-perfmon
	rc=$?
	if [ "$rc" = 0 ] && grep -q "not loaded and BPF cannot run here (needs CAP_BPF); using AF_PACKET" "$work/auto-nobpf.err" &&
		grep -q "capturing from packet" "$work/auto-nobpf.err" &&
		[ "$(awk -F, 'NR > 1 && $2 == "packet" && $10 == "echo-request"' "$work/auto-nobpf.csv" | wc -l)" = 2 ]; then
		ok auto-packet "without CAP_BPF: $(head -n 1 "$work/auto-nobpf.err")"
	else
		ko auto-packet "rc=$rc: $(cat "$work/auto-nobpf.err")"
	fi
fi

# --- the dashboard in a real terminal (tmux), live from AF_PACKET ---
tm kill-server 2>/dev/null
tm new-session -d -s dash -x 120 -y 40 "ip netns exec '$r' '$bin' --source packet 2>'$work/dash.err'; echo EXIT=\$?; sleep 60"
if screen_wait "source packet"; then
	in_a ping -c 5 -i 0.2 10.96.1.1 >/dev/null
	# requester → responder, requests, replies, pending, loss
	if screen_wait "10\.96\.1\.2 → 10\.96\.1\.1 +5 +5 +0 +0\.0%"; then shown=yes; else shown=no; fi
	row=$(tm capture-pane -p -t dash | grep -m1 "10.96.1.2 →" | tr -s ' ')
	header=$(tm capture-pane -p -t dash | grep -m1 -o "source packet[^│]*" | tr -s ' ')
	# The header names the loss stages: the ring's, then the channel's.
	if tm capture-pane -p -t dash | grep -q "lost ring 0 channel 0"; then stages=yes; else stages=no; fi
	tm send-keys -t dash q
	if screen_wait "EXIT=" && tm capture-pane -p -t dash | grep -q "EXIT=0" && [ "$shown" = yes ] && [ "$stages" = yes ]; then
		ok packet-dashboard "tmux showed [$header], lost ring 0 channel 0 and [$row]; q: exit 0"
	else
		ko packet-dashboard "shown=$shown stages=$stages row=[$row]: $(tm capture-pane -p -t dash | head -n 4) $(cat "$work/dash.err")"
	fi
else
	ko packet-dashboard "no dashboard: $(tm capture-pane -p -t dash) $(cat "$work/dash.err")"
fi
tm kill-server 2>/dev/null

# --- the README's main job, as written, on this kernel (no module): in r,
# from the checkout; rows appear; Ctrl-C ends it with exit 0 ---
main_job=$(awk '/^\*\*Main job\*\*/ { m = 1 } m && /^```sh$/ { getline; print; exit }' "$repo/README.md")
if [ -z "$main_job" ]; then
	ko readme-main-job "no main job command found in README.md"
else
	(cd "$repo" && exec timeout -s KILL 900 setsid ip netns exec "$r" bash -c "$main_job") >"$work/main.out" 2>"$work/main.err" &
	PID=$!
	for _ in $(seq 1200); do
		grep -q "capturing from" "$work/main.err" 2>/dev/null && break
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.5
	done
	in_a ping -c 3 -i 0.2 10.96.1.1 >/dev/null
	sleep 0.5
	# Ctrl-C: the terminal signals icmpmon (sudo relays only signals sent
	# by other processes, so a kill of the whole group would be two).
	pkill -INT -f '^target/release/icmpmon --csv -$'
	wait "$PID"
	rc=$?
	# auto: bpf on this kernel; its drop rows are second sightings.
	echoes=$(awk -F, '$2 == "bpf" && $3 != "drop" && ($10 == "echo-request" || $10 == "echo-reply")' "$work/main.out" | wc -l)
	if [ "$rc" = 0 ] && [ "$echoes" = 6 ] && grep -q '^timestamp,source,' "$work/main.out"; then
		ok readme-main-job "[$main_job]: 6 echo rows from the bpf source, Ctrl-C: exit 0"
	else
		ko readme-main-job "rc=$rc echoes=$echoes: $(tail -n 5 "$work/main.err")"
	fi
fi

echo "netns passive: $pass passed, $fail failed"
[ "$fail" = 0 ]

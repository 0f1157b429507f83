#!/usr/bin/env bash
# tests/netns/run.sh — the NFQUEUE source on this machine's real kernel (root).
# Two network namespaces joined by veth (IPv4 + IPv6): icmpmon --source
# nfqueue runs in "mon", traffic comes from "peer". Every check prints one
# "NETNS <name> PASS|FAIL <detail>" line; the last line counts them.
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/netns/lib.sh
. "$repo/tests/netns/lib.sh"
bin="$repo/target/debug/icmpmon"
work=$(mktemp -d /tmp/icmpmon-netns.XXXXXX)
helper="$work/vmhelper"
mon=icmpmon-t-mon
peer=icmpmon-t-peer

cleanup() {
	netns_teardown "$mon" "$peer"
	rm -rf "$work"
}
trap cleanup EXIT

CHECK_KIND=NETNS
# shellcheck source=tests/checks.sh
. "$repo/tests/checks.sh"
in_mon() { ip netns exec "$mon" "$@"; }
in_peer() { ip netns exec "$peer" "$@"; }

(cd "$repo" && cargo build --locked -q) || exit 1
gcc -static -O2 -Wall -Wextra -Werror -o "$helper" "$repo/tests/vm/helper.c" || exit 1

netns_pair "$mon" "$peer" icm0 icm1 10.99.0 fd99

# start_icmpmon NAME [ARGS]: in the monitor namespace; sets PID once it
# reports that it captures.
start_icmpmon() {
	local name=$1
	shift
	# Not through in_mon: `func &` would make $! a subshell, not icmpmon.
	ip netns exec "$mon" "$bin" --source nfqueue --csv "$work/$name.csv" "$@" 2>"$work/$name.err" &
	PID=$!
	for _ in $(seq 100); do
		grep -q "capturing from" "$work/$name.err" 2>/dev/null && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/$name.err"
	return 1
}

rules_left() {
	{
		for t in raw mangle; do in_mon iptables-save -t $t; in_mon ip6tables-save -t $t; done
		in_mon nft list ruleset 2>/dev/null
	} | grep -ci icmpmon
}

rows() { # FILE FAMILY KIND
	awk -F, -v f="$2" -v k="$3" 'NR > 1 && $5 == f && $10 == k { n++ } END { print n + 0 }' "$1"
}

tcpdump_count() { # FILE FILTER
	tcpdump -nn -r "$1" "$2" 2>/dev/null | wc -l
}

# --- traffic seen, counted against tcpdump in the same run ---
ip netns exec "$mon" tcpdump -i icm0 -nn -U -w "$work/dump.pcap" 'icmp or icmp6' 2>/dev/null &
dump=$!
sleep 1
if start_icmpmon traffic; then
	in_peer ping -c 5 -i 0.2 10.99.0.1 >/dev/null
	in_peer ping -c 5 -i 0.2 fd99::1 >/dev/null
	in_peer "$helper" udp 10.99.0.1 33434
	in_peer "$helper" udp fd99::1 33435
	sleep 0.5
	# Set up, it keeps nothing, in every thread, with no_new_privs and
	# under seccomp, and has become nobody, or icmpmon if that user exists
	# (it was started as root; gid too, no supplementary group); its
	# rules helper (which sends the verdicts and removes the rules) keeps
	# CAP_NET_ADMIN (bit 12) and CAP_NET_RAW (bit 13) only.
	caps=$(for t in /proc/"$PID"/task/*; do
		awk '/^(Uid|Gid):/ { printf "%s%s/%s/%s ", $1, $2, $3, $4 }
			/^Groups:/ { printf "Groups:%s ", $2 }
			/^Cap(Eff|Prm|Bnd)|^NoNewPrivs|^Seccomp:/ { printf "%s%s ", $1, $2 }' "$t/status"
		echo
	done | sort -u | tr -d '\n')
	rhelper=$(pgrep -P "$PID" -f 'privsep-helper rules')
	helper_caps=$(awk '/^Cap(Eff|Prm)/ { printf "%s%s ", $1, $2 }' "/proc/${rhelper:-0}/status" 2>/dev/null)
	kill -INT "$PID"
	wait "$PID"
	rc=$?
	sleep 0.5
	kill -INT "$dump"
	wait "$dump" 2>/dev/null
	f="$work/traffic.csv"
	got="echo4=$(($(rows "$f" 4 echo-request) + $(rows "$f" 4 echo-reply)))"
	got="$got echo6=$(($(rows "$f" 6 echo-request) + $(rows "$f" 6 echo-reply)))"
	got="$got unreach4=$(rows "$f" 4 port-unreachable) unreach6=$(rows "$f" 6 port-unreachable)"
	d="$work/dump.pcap"
	want="echo4=$(tcpdump_count "$d" 'icmp[icmptype] == icmp-echo or icmp[icmptype] == icmp-echoreply')"
	want="$want echo6=$(tcpdump_count "$d" 'icmp6 and (ip6[40] == 128 or ip6[40] == 129)')"
	want="$want unreach4=$(tcpdump_count "$d" 'icmp[icmptype] == icmp-unreach')"
	want="$want unreach6=$(tcpdump_count "$d" 'icmp6 and ip6[40] == 1')"
	if [ "$rc" = 0 ] && [ "$got" = "$want" ] && [ "$got" = "echo4=10 echo6=10 unreach4=1 unreach6=1" ]; then
		ok traffic "icmpmon [$got] = tcpdump [$want]; $(grep -o 'xtables[^)]*)\|nftables[^)]*)' "$work/traffic.err" | head -n 1)"
	else
		ko traffic "rc=$rc icmpmon [$got] tcpdump [$want]: $(tail -n 3 "$work/traffic.err")"
	fi
	user=$(id -un icmpmon 2>/dev/null || echo nobody)
	ids="Uid:$(id -u "$user")/$(id -u "$user")/$(id -u "$user") Gid:$(id -g "$user")/$(id -g "$user")/$(id -g "$user") Groups:"
	want_caps="$ids CapPrm:0000000000000000 CapEff:0000000000000000 CapBnd:0000000000000000 NoNewPrivs:1 Seccomp:2 "
	want_helper="CapPrm:0000000000003000 CapEff:0000000000003000 "
	if [ "$caps" = "$want_caps" ] && [ "$helper_caps" = "$want_helper" ]; then
		ok privileges-dropped "every thread: $caps; rules helper $rhelper: $helper_caps"
	else
		ko privileges-dropped "got [$caps], rules helper ${rhelper:-none} [$helper_caps]"
	fi
	n=$(rules_left)
	if [ "$n" = 0 ]; then ok sigint-rules-removed "no icmpmon rule in iptables/ip6tables/nft"; else ko sigint-rules-removed "$n lines mention icmpmon"; fi
	# The aggregator paired every echo live: rtt_us on each reply row, and
	# the summary's peer lines.
	norrt=$(awk -F, '$10 == "echo-reply" && $15 == "" { n++ } END { print n + 0 }' "$f")
	p4=$(grep -c "10.99.0.2 → 10.99.0.1: 5 req, 5 rep, 0 lost (0.0%)" "$work/traffic.err")
	p6=$(grep -c "fd99::2 → fd99::1: 5 req, 5 rep, 0 lost (0.0%)" "$work/traffic.err")
	if [ "$norrt" = 0 ] && [ "$p4" = 1 ] && [ "$p6" = 1 ]; then
		ok live-rtt "every reply has rtt_us; $(grep -- '10.99.0.2 → 10.99.0.1' "$work/traffic.err" | sed 's/^icmpmon: *//')"
	else
		ko live-rtt "replies without rtt_us: $norrt; summary: $(grep -- ' → ' "$work/traffic.err")"
	fi
	inner=$(awk -F, '$10 == "port-unreachable" && $5 == 4 { print $16 "/" $20 }' "$f")
	if [ "$inner" = "17/33434" ]; then ok quoted-flow "inner udp/33434"; else ko quoted-flow "got [$inner]"; fi
else
	ko traffic "icmpmon did not start"
fi

# --- anomaly alerts from a live source ---
if start_icmpmon alerts --alerts "$work/alerts.jsonl" --flood-pps 20; then
	in_peer ping -q -c 60 -i 0.01 10.99.0.1 >/dev/null
	sleep 0.3
	kill -INT "$PID"
	wait "$PID"
	rc=$?
	if [ "$rc" = 0 ] && grep -q '"flag":"echo-flood","subject":"10.99.0.2"' "$work/alerts.jsonl" &&
		grep -q "flag echo-flood 10.99.0.2" "$work/alerts.err"; then
		ok alerts "$(head -n 1 "$work/alerts.jsonl")"
	else
		ko alerts "rc=$rc alerts=[$(cat "$work/alerts.jsonl")]: $(tail -n 3 "$work/alerts.err")"
	fi
else
	ko alerts "icmpmon did not start"
fi

# --- SIGTERM is a clean stop too ---
if start_icmpmon term; then
	kill -TERM "$PID"
	wait "$PID"
	rc=$?
	n=$(rules_left)
	if [ "$rc" = 0 ] && [ "$n" = 0 ]; then ok sigterm "exit 0, rules removed"; else ko sigterm "rc=$rc rules=$n"; fi
else
	ko sigterm "icmpmon did not start"
fi

# --- SIGKILL of icmpmon: its rules helper removes the rules at once ---
if start_icmpmon killed-mon; then
	rhelper=$(pgrep -P "$PID" -f 'privsep-helper rules')
	before=$(rules_left)
	kill -KILL "$PID"
	wait "$PID" 2>/dev/null
	for _ in $(seq 50); do
		[ "$(rules_left)" = 0 ] && ! alive "${rhelper:-0}" && break
		sleep 0.1
	done
	n=$(rules_left)
	if [ "$before" -gt 0 ] && [ "$n" = 0 ] && ! alive "${rhelper:-0}" &&
		in_peer ping -c 2 -i 0.2 -W 1 10.99.0.1 >/dev/null; then
		ok sigkill-helper "icmpmon SIGKILLed: its rules helper removed the rules ($before lines) and ended; pings answered"
	else
		ko sigkill-helper "rules before $before, after $n; helper ${rhelper:-none}"
	fi
else
	ko sigkill-helper "icmpmon did not start"
fi

# --- SIGKILL of icmpmon and its helpers: pings still answered (bypass);
# the next start cleans up ---
if start_icmpmon killed; then
	kill -KILL $(pgrep -P "$PID") "$PID"
	wait "$PID" 2>/dev/null
	stale=$(rules_left)
	if in_peer ping -c 3 -i 0.2 -W 1 10.99.0.1 >/dev/null && in_peer ping -c 3 -i 0.2 -W 1 fd99::1 >/dev/null; then
		ok sigkill-bypass "rules left behind ($stale lines) yet pings are answered"
	else
		ko sigkill-bypass "pings failed with icmpmon killed"
	fi
	if start_icmpmon restart; then
		in_peer ping -c 2 -i 0.2 10.99.0.1 >/dev/null
		sleep 0.3
		kill -INT "$PID"
		wait "$PID"
		rc=$?
		if [ "$stale" -gt 0 ] && grep -q "removed stale" "$work/restart.err" && [ "$rc" = 0 ] &&
			[ "$(rows "$work/restart.csv" 4 echo-request)" = 2 ] && [ "$(rules_left)" = 0 ]; then
			ok stale-cleanup "$(grep -c 'removed stale' "$work/restart.err") stale rule sets removed at start"
		else
			ko stale-cleanup "stale=$stale rc=$rc: $(cat "$work/restart.err")"
		fi
	else
		ko stale-cleanup "restart failed"
	fi
else
	ko sigkill-bypass "icmpmon did not start"
fi

# --- a second monitor on the same queue is refused clearly ---
if start_icmpmon first; then
	in_mon "$bin" --source nfqueue --csv "$work/second.csv" 2>"$work/second.err"
	rc=$?
	kill -INT "$PID"
	wait "$PID"
	if [ "$rc" = 1 ] && grep -q "bound by another program" "$work/second.err" && [ "$(rules_left)" = 0 ]; then
		ok queue-busy "second monitor: exit 1, told to choose --queue-num"
	else
		ko queue-busy "rc=$rc: $(cat "$work/second.err")"
	fi
else
	ko queue-busy "icmpmon did not start"
fi

# --- issue 10.2: a second monitor on another queue never takes the first's
# rules: it is refused (xtables serves one queue per table), and the first
# keeps seeing traffic ---
if start_icmpmon owner; then
	in_mon "$bin" --source nfqueue --queue-num 7708 --csv "$work/other.csv" 2>"$work/other.err"
	rc=$?
	in_peer ping -c 3 -i 0.2 10.99.0.1 >/dev/null
	sleep 0.3
	kill -INT "$PID"
	wait "$PID"
	rc1=$?
	seen=$(rows "$work/owner.csv" 4 echo-request)
	if [ "$rc" = 1 ] && grep -q "another icmpmon captures" "$work/other.err" &&
		! grep -q "removed stale" "$work/other.err" && [ "$seen" = 3 ] && [ "$rc1" = 0 ] &&
		grep -q "lost: queue 0" "$work/owner.err" && [ "$(rules_left)" = 0 ]; then
		ok second-instance "refused ($(tail -n 1 "$work/other.err" | cut -c1-90)...); the first saw all 3 pings"
	else
		ko second-instance "rc=$rc rc1=$rc1 seen=$seen: $(cat "$work/other.err") | $(tail -n 2 "$work/owner.err")"
	fi
else
	ko second-instance "icmpmon did not start"
fi

# --- issue 10.5: a non-root service with ambient capabilities, and a binary
# with file capabilities, install and remove their rules ---
setpriv_run() { # NAME [SETPRIV ARGS] -- CMD...
	local name=$1
	shift
	in_mon setpriv --reuid=65534 --regid=65534 --clear-groups "$@" --source nfqueue --duration 2 \
		--csv /dev/null 2>"$work/$name.err"
}
setpriv_run ambient --inh-caps +net_admin,+net_raw --ambient-caps +net_admin,+net_raw "$bin"
rc=$?
left=$(rules_left)
if [ "$rc" = 0 ] && [ "$left" = 0 ] && grep -q "capturing from nfqueue" "$work/ambient.err"; then
	ok ambient-caps "uid 65534 with ambient net_admin,net_raw: exit 0, no rules left"
else
	ko ambient-caps "rc=$rc rules=$left: $(cat "$work/ambient.err")"
fi
cp "$bin" "$work/icmpmon-fcap"
chmod 755 "$work" "$work/icmpmon-fcap"
if setcap cap_net_admin,cap_net_raw+ep "$work/icmpmon-fcap"; then
	# Under /proc mounted hidepid=invisible (as ProtectProc=invisible
	# mounts it): the rules helper must still find its parent, which file
	# capabilities make not dumpable, and serve it.
	in_mon unshare --mount --propagation private sh -c \
		'mount -t proc -o hidepid=invisible proc /proc && exec "$@"' sh \
		setpriv --reuid=65534 --regid=65534 --clear-groups "$work/icmpmon-fcap" --source nfqueue \
		--duration 2 --csv /dev/null 2>"$work/filecaps.err"
	rc=$?
	left=$(rules_left)
	if [ "$rc" = 0 ] && [ "$left" = 0 ] && grep -q "capturing from nfqueue" "$work/filecaps.err" &&
		! grep -q "rules helper" "$work/filecaps.err"; then
		ok file-caps "uid 65534, setcap net_admin,net_raw+ep, hidepid: exit 0, its rules helper served, no rules left"
	else
		ko file-caps "rc=$rc rules=$left: $(cat "$work/filecaps.err")"
	fi
else
	ko file-caps "setcap failed"
fi

# --- issue 10.6: records come defragmented, as the module's do ---
if start_icmpmon frag; then
	in_peer ping -c 2 -i 0.2 -s 3000 10.99.0.1 >/dev/null
	in_peer ping -6 -c 2 -i 0.2 -s 3000 fd99::1 >/dev/null
	sleep 0.3
	kill -INT "$PID"
	wait "$PID"
	req4=$(awk -F, '$10 == "echo-request" && $5 == 4 && $14 == 3028' "$work/frag.csv" | wc -l)
	rep4=$(awk -F, '$10 == "echo-reply" && $5 == 4 && $14 == 3028' "$work/frag.csv" | wc -l)
	req6=$(awk -F, '$10 == "echo-request" && $5 == 6 && $14 == 3048' "$work/frag.csv" | wc -l)
	if [ "$req4" = 2 ] && [ "$rep4" = 2 ] && [ "$req6" = 2 ] && grep -q "parse errors 0" "$work/frag.err" &&
		! grep -q "payload-mismatch" "$work/frag.err"; then
		ok defragmented "ping -s 3000: rows of 3028 (v4) and 3048 (v6) bytes, no fragment parse errors"
	else
		ko defragmented "req4=$req4 rep4=$rep4 req6=$req6: $(grep -e 'parse' -e mismatch "$work/frag.err")"
	fi
else
	ko defragmented "icmpmon did not start"
fi

# --- issue 10.8: `| head -2` ends the run at once, traffic or not ---
in_peer ping -c 2 -i 0.5 10.99.0.1 >/dev/null &
t0=$(date +%s%N)
in_mon timeout 20 "$bin" --source nfqueue --csv - 2>"$work/head.err" | head -2 >"$work/head.out"
rc=${PIPESTATUS[0]}
ms=$((($(date +%s%N) - t0) / 1000000))
wait
if [ "$rc" = 0 ] && [ "$ms" -lt 5000 ] && grep -q "output closed" "$work/head.err" &&
	[ "$(wc -l <"$work/head.out")" = 2 ] && [ "$(rules_left)" = 0 ]; then
	ok closed-stdout "head -2: exit 0 after $ms ms, rules removed"
else
	ko closed-stdout "rc=$rc after $ms ms: $(tail -n 1 "$work/head.err")"
fi

# --- issue 10.13: Ctrl-C ends a run under a flood ---
if start_icmpmon flood; then
	ip netns exec "$peer" timeout 10 ping -f 10.99.0.1 >/dev/null &
	flood=$!
	sleep 2
	t0=$(date +%s%N)
	kill -INT "$PID"
	wait "$PID"
	rc=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	kill "$flood" 2>/dev/null
	wait "$flood" 2>/dev/null
	# Issue 20.5: the packets still queued at the stop get their verdicts
	# before the hooks go, so the kernel refuses none.
	if [ "$rc" = 0 ] && [ "$ms" -lt 3000 ] && [ "$(rules_left)" = 0 ] &&
		! grep -q "refused a verdict" "$work/flood.err" && grep -q " verdict_errors=0 " "$work/flood.err"; then
		ok flood-stop "SIGINT under ping -f: exit 0 after $ms ms, no verdict refused"
	else
		ko flood-stop "rc=$rc after $ms ms: $(grep -o 'refused a verdict.*\|verdict_errors=[0-9]*' "$work/flood.err" | tr '\n' ' ')"
	fi
else
	ko flood-stop "icmpmon did not start"
fi

# --- issue 10.7: a second interrupt during the stop exits at once (130) or
# lets the clean stop finish (0) — either way no rule is left, and no
# terminal escape goes into a CSV on stdout ---
if start_icmpmon double; then
	kill -INT "$PID"
	sleep 0.02
	kill -INT "$PID"
	wait "$PID"
	rc=$?
	if { [ "$rc" = 130 ] || [ "$rc" = 0 ]; } && [ "$(rules_left)" = 0 ] && grep -q "second interrupt" "$work/double.err"; then
		ok double-interrupt "exit $rc, rules removed"
	else
		ko double-interrupt "rc=$rc rules=$(rules_left): $(tail -n 2 "$work/double.err")"
	fi
else
	ko double-interrupt "icmpmon did not start"
fi
ip netns exec "$mon" "$bin" --source nfqueue --csv - >"$work/double-stdout.csv" 2>"$work/double2.err" &
p=$!
for _ in $(seq 50); do grep -q "capturing from" "$work/double2.err" && break; sleep 0.1; done
in_peer ping -c 1 10.99.0.1 >/dev/null
sleep 0.3
kill -INT "$p"
sleep 0.02
kill -INT "$p"
wait "$p"
rc=$?
if { [ "$rc" = 130 ] || [ "$rc" = 0 ]; } && ! grep -q $'\e' "$work/double-stdout.csv" && [ "$(rules_left)" = 0 ]; then
	ok double-interrupt-csv "exit $rc; the CSV on stdout holds no terminal escapes"
else
	ko double-interrupt-csv "rc=$rc: $(od -c "$work/double-stdout.csv" | tail -n 3)"
fi

# --- issue 10.15: a signal at any moment of start-up leaves no rules ---
# (SIGTERM: a script's background jobs ignore SIGINT until a handler is set.)
leftovers=0
for delay in 0 0.02 0.05 0.1 0.15 0.2 0.3 0.5; do
	ip netns exec "$mon" "$bin" --source nfqueue --csv /dev/null 2>/dev/null &
	p=$!
	sleep "$delay"
	kill -TERM "$p"
	wait "$p"
	[ "$(rules_left)" = 0 ] || leftovers=$((leftovers + 1))
	in_mon "$bin" --source nfqueue --duration 0.1 --csv /dev/null 2>/dev/null # cleans up for the next
done
if [ "$leftovers" = 0 ]; then
	ok startup-signal "SIGTERM 0–500 ms after start: no rules left in 8 runs"
else
	ko startup-signal "rules left in $leftovers of 8 runs"
fi

# --- issue 10.16: packets the kernel lets through unqueued are counted ---
if start_icmpmon failopen; then
	kill -STOP "$PID"
	# More than the queue holds (8192) while icmpmon cannot read.
	in_peer python3 "$repo/tests/netns/blast.py" 10.99.0.1 12000
	sleep 0.5
	kill -CONT "$PID"
	sleep 1.5
	kill -INT "$PID"
	wait "$PID"
	seen=$(rows "$work/failopen.csv" 4 echo-request)
	lost=$(sed -n 's/.*lost: queue \([0-9]*\),.*/\1/p' "$work/failopen.err")
	if [ -n "$lost" ] && [ "$lost" -gt 0 ] && [ $((seen + lost)) -ge 12000 ]; then
		ok failopen-counted "12000 requests: $seen seen, $lost counted lost (fail-open)"
	else
		ko failopen-counted "seen=$seen lost=$lost: $(grep 'lost:' "$work/failopen.err")"
	fi
else
	ko failopen-counted "icmpmon did not start"
fi

# --- the dashboard in a real terminal (tmux), live from NFQUEUE ---
TMUX_SERVER=icmpmon-netns
tm kill-server 2>/dev/null
tm new-session -d -s dash -x 120 -y 40 "ip netns exec $mon $bin --source nfqueue 2>$work/dash.err; echo EXIT=\$?; sleep 60"
if screen_wait "source nfqueue"; then
	in_peer ping -c 5 -i 0.2 10.99.0.1 >/dev/null
	# The peer row: requester → responder, 5 requests, 5 replies, no loss.
	# requester → responder, requests, replies, pending, loss
	if screen_wait "10\.99\.0\.2 → 10\.99\.0\.1 +5 +5 +0 +0\.0%"; then shown=yes; else shown=no; fi
	row=$(tm capture-pane -p -t dash | grep -m1 "10.99.0.2 →" | tr -s ' ')
	tm send-keys -t dash q
	if screen_wait "EXIT=" && tm capture-pane -p -t dash | grep -q "EXIT=0" && [ "$shown" = yes ] && [ "$(rules_left)" = 0 ]; then
		ok dashboard "tmux showed [$row]; q: exit 0, rules removed"
	else
		ko dashboard "shown=$shown row=[$row] rules=$(rules_left): $(tm capture-pane -p -t dash | tail -n 5) $(cat "$work/dash.err")"
	fi
else
	ko dashboard "no dashboard: $(tm capture-pane -p -t dash) $(cat "$work/dash.err")"
fi
tm kill-server 2>/dev/null

# --- without privileges: says which capability is missing ---
in_mon "$helper" runas 65534 "$bin" --source nfqueue --duration 3 --csv - >/dev/null 2>"$work/unpriv.err"
rc=$?
if [ "$rc" = 1 ] && grep -q "needs CAP_NET_ADMIN" "$work/unpriv.err"; then
	ok unprivileged "exit 1: $(tail -n 1 "$work/unpriv.err")"
else
	ko unprivileged "rc=$rc: $(cat "$work/unpriv.err")"
fi

echo "netns: $pass passed, $fail failed"
[ "$fail" = 0 ]

#!/usr/bin/env bash
# tests/netns/attribution.sh — who got hurt, and why no reply (root). Three
# namespaces: a (clients, icmpmon) — r (router, MTU 1400 towards c) — c
# (servers). Checks that ICMP errors are tied to the local process whose
# flow they quote (pid, comm, cgroup), the path-MTU map, the kernel's
# counters and sysctls (local-rate-limit, echo-ignored), a flood of errors
# quoting spoofed flows (nothing lost, lookups bounded and counted). Every
# check prints one "ATTRIB <name> PASS|FAIL <detail>" line; the last line
# counts them.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "tests/netns/attribution.sh: needs root (namespaces, cgroups)" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/netns/lib.sh
. "$repo/tests/netns/lib.sh"
bin="$repo/target/debug/icmpmon"
work=$(mktemp -d /tmp/icmpmon-attrib.XXXXXX)
a=icmpmon-t-a
r=icmpmon-t-r
c=icmpmon-t-c
cg_name=icmpmon-attrib-$$
cg_mounted=""
cg=""

cleanup() {
	netns_kill $a $r $c
	sleep 0.2
	if [ -n "$cg" ] && [ -d "$cg" ]; then
		rmdir "$cg" 2>/dev/null
	fi
	if [ -n "$cg_mounted" ]; then
		umount "$cg_mounted" && rmdir "$cg_mounted"
	fi
	netns_remove $a $r $c
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

CHECK_KIND=ATTRIB
# shellcheck source=tests/checks.sh
. "$repo/tests/checks.sh"
in_a() { ip netns exec "$a" "$@"; }
in_r() { ip netns exec "$r" "$@"; }
in_c() { ip netns exec "$c" "$@"; }

(cd "$repo" && cargo build --locked -q) || exit 1

# --- a (10.81.1.2) — r (10.81.1.1 | 10.81.2.1, MTU 1400 out to c) — c (10.81.2.2)
for ns in $a $r $c; do
	ip netns del "$ns" 2>/dev/null
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
done
ip link add ta0 netns "$a" type veth peer name tr0 netns "$r"
ip link add tc0 netns "$c" type veth peer name tr1 netns "$r"
ip -n "$a" addr add 10.81.1.2/24 dev ta0
ip -n "$r" addr add 10.81.1.1/24 dev tr0
ip -n "$r" addr add 10.81.2.1/24 dev tr1
ip -n "$c" addr add 10.81.2.2/24 dev tc0
# Only r's way out to c is narrow: c still offers MSS 1460, so a's TCP
# sends full-size segments with DF, and r answers frag-needed (MTU 1400).
ip -n "$r" link set tr1 mtu 1400
for l in "$a ta0" "$r tr0" "$r tr1" "$c tc0"; do
	set -- $l
	ip -n "$1" link set "$2" up
done
ip -n "$a" route add default via 10.81.1.1
ip -n "$c" route add default via 10.81.2.1
in_r sysctl -qw net.ipv4.ip_forward=1
in_a ping -c 1 -W 2 10.81.2.2 >/dev/null || { ko topology "a cannot reach c"; exit 1; }

# A cgroup of the test's own (systemd-run --scope needs systemd as PID 1,
# which these machines lack): in the unified hierarchy, mounted here if
# the machine has none.
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
if [ -z "$cg2" ]; then
	cg_mounted=$(mktemp -d /tmp/icmpmon-cg2.XXXXXX)
	mount -t cgroup2 none "$cg_mounted" && cg2=$cg_mounted
fi
cg="$cg2/$cg_name"
mkdir "$cg"

# A client process named $1 (its comm), in the test's cgroup when $2 is
# "cg", as nobody when it is "nobody", else as root, running python code $3
# in namespace a (the system python: nobody cannot run a pyenv shim). Its
# pid (kept through the execs) is in $work/$1.pid.
client() {
	local name=$1 how=$2 code=$3 as=()
	[ "$how" = nobody ] && as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	(
		echo $BASHPID >"$work/$name.pid"
		[ "$how" = cg ] && echo $BASHPID >"$cg/cgroup.procs"
		exec ip netns exec "$a" "${as[@]}" /usr/bin/python3 -c "
import ctypes, socket, time
ctypes.CDLL(None).prctl(15, b'$name', 0, 0, 0)
$code"
	) &
	disown
}

# --- 1: errors quoting local flows, with icmpmon in a
ip netns exec "$a" "$bin" --source packet --headless --csv "$work/a.csv" --summary-json "$work/a.json" \
	--duration 8 2>"$work/a.err" &
mon=$!
for _ in $(seq 100); do grep -q "capturing from" "$work/a.err" && break; sleep 0.1; done
# Privilege separation: every thread of the monitor (the process that
# parses) and its attribution helper, as the kernel shows them.
caps_of() {
	local t
	for t in /proc/"$1"/task/*; do
		echo "$(cat "$t/comm") $(awk '/^(Uid|Gid):/ { printf "%s%s/%s/%s ", $1, $2, $3, $4 }
			/^Groups:/ { g = ""; for (i = 2; i <= NF; i++) g = g (i > 2 ? "," : "") $i; printf "Groups:%s ", g }
			/^(CapPrm|CapEff|Seccomp):/ { printf "%s%s ", $1, $2 }' "$t/status")"
	done
}
sleep 0.5
caps_of "$mon" >"$work/monitor.caps"
helper=$(pgrep -P "$mon" -f 'privsep-helper attribution')
[ -n "$helper" ] && caps_of "$helper" >"$work/helper.caps"
fhelper=$(pgrep -P "$mon" -f 'privsep-helper files')
[ -n "$fhelper" ] && caps_of "$fhelper" >"$work/fhelper.caps"

# UDP to a closed port of c, three datagrams, then the process lingers.
client udpclient cg "
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(('10.81.2.2', 9))
for _ in range(3):
    try: s.send(b'x')
    except OSError: pass
    time.sleep(0.2)
time.sleep(5)"
# The same as another user: its /proc/PID/fd is not root's to read without
# the capabilities the lookup thread keeps.
client nobodyclient nobody "
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(('10.81.2.2', 10))
try: s.send(b'x')
except OSError: pass
time.sleep(5)"
# TCP through r's narrow link: 20 KB in full-size segments.
in_c python3 -c "
import socket
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('10.81.2.2', 5001)); l.listen(1); l.settimeout(8)
c, _ = l.accept()
while c.recv(65536): pass" &
disown
sleep 0.3
client tcpclient host "
s = socket.create_connection(('10.81.2.2', 5001))
s.sendall(b'x' * 20000)
time.sleep(5)"
in_a ping -c 2 -i 0.2 10.81.2.2 >/dev/null
# And as nobody, without ping's file capability (no_new_privs): an ICMP
# datagram ("ping") socket, found in /proc/net/icmp by its echo id.
in_a sysctl -qw net.ipv4.ping_group_range="0 2147483647"
# r has no route to 10.99.0.0/16: its unreachables quote ping's requests.
in_a ping -c 2 -i 0.3 -W 1 10.99.0.1 >/dev/null 2>&1
in_a setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
	ping -c 2 -i 0.2 10.81.2.2 >"$work/ping-dgram.txt" 2>&1
wait $mon
rc=$?
udp_pid=$(cat "$work/udpclient.pid" 2>/dev/null)
tcp_pid=$(cat "$work/tcpclient.pid" 2>/dev/null)
check run "icmpmon in a ran and ended by itself: exit $rc" test "$rc" = 0
# Started as root, it became the default user (icmpmon if there is one,
# else nobody): uid and gid real, effective and saved, no supplementary
# group.
user=$(id -un icmpmon 2>/dev/null || echo nobody)
ids="Uid:$(id -u "$user")/$(id -u "$user")/$(id -u "$user") Gid:$(id -g "$user")/$(id -g "$user")/$(id -g "$user") Groups:"
check monitor-unprivileged "every thread of the monitor runs as $user ($ids) with empty CapPrm and CapEff, under seccomp (mode 2): $(tr '\n' ';' <"$work/monitor.caps")" \
	sh -c "test \$(wc -l <'$work/monitor.caps') -ge 4 && ! grep -v ' $ids CapPrm:0000000000000000 CapEff:0000000000000000 Seccomp:2 \$' '$work/monitor.caps'"
# Every line of the file is $2 (and there is one).
all_lines() { test -s "$1" && ! grep -Evx "$2" "$1"; }
# CAP_DAC_READ_SEARCH is bit 2, CAP_SYS_PTRACE bit 19: 0x80004, no more.
check helper-caps "the attribution helper (pid ${helper:-none}, a child of the monitor) keeps CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE only: $(tr '\n' ';' <"$work/helper.caps" 2>/dev/null)" \
	all_lines "$work/helper.caps" "icmpmon-attrib Uid:0/0/0 Gid:0/0/0 Groups:[0-9,]* CapPrm:0000000000080004 CapEff:0000000000080004 Seccomp:0 "
# CAP_DAC_OVERRIDE is bit 1: the files helper reopens the CSV on SIGHUP.
check files-helper-caps "the files helper (pid ${fhelper:-none}) keeps root's uid and CAP_DAC_OVERRIDE only: $(tr '\n' ';' <"$work/fhelper.caps" 2>/dev/null)" \
	all_lines "$work/fhelper.caps" "icmpmon-files Uid:0/0/0 Gid:0/0/0 Groups:[0-9,]* CapPrm:0000000000000002 CapEff:0000000000000002 Seccomp:0 "
# They end when the monitor's end of their sockets closes: at once, or
# after the current lookup.
for _ in $(seq 30); do
	alive "${helper:-0}" || alive "${fhelper:-0}" || break
	sleep 0.1
done
gone=yes
alive "${helper:-0}" && gone=no
alive "${fhelper:-0}" && gone=no
check helper-gone "the helpers ended with the monitor" [ $gone = yes ]
# A helper keeps capabilities: started by anything but icmpmon (here a
# Python parent with a socketpair of its own), it refuses to serve.
byhand=$(python3 - "$bin" <<'PYEOF'
import socket, subprocess, sys
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
for role in ("rules", "attribution", "files"):
    p = subprocess.run([sys.argv[1], "--privsep-helper", role], stdin=b, capture_output=True, timeout=10)
    print(role, p.returncode, end="; ")
PYEOF
)
check helper-by-hand "helpers started by another program exit 2: $byhand" [ "$byhand" = "rules 2; attribution 2; files 2; " ]

# A helper killed mid-run: said once, its lookups counted as skipped, the
# run goes on to its end and exits 0.
ip netns exec "$a" "$bin" --source packet --headless --csv "$work/k.csv" --summary-json "$work/k.json" \
	--duration 4 2>"$work/k.err" &
kmon=$!
for _ in $(seq 100); do grep -q "capturing from" "$work/k.err" && break; sleep 0.1; done
khelper=$(pgrep -P "$kmon" -f 'privsep-helper attribution')
kill -9 "$khelper"
client udpkilled host "
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(('10.81.2.2', 11))
for _ in range(3):
    try: s.send(b'x')
    except OSError: pass
    time.sleep(0.2)
time.sleep(2)"
wait $kmon
krc=$?
ksaid=$(grep -c "attribution helper (pid $khelper) stopped answering" "$work/k.err")
kskipped=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['snapshot']['attribution']['skipped'])" "$work/k.json" 2>/dev/null)
check helper-killed "helper $khelper killed: exit $krc, said $ksaid times ($(grep 'stopped answering' "$work/k.err")), skipped ${kskipped:-?}" \
	sh -c "test '$krc' = 0 && test '$ksaid' = 1 && test '${kskipped:-0}' -ge 1"

# Log rotation as nobody: the CSV and the alerts live in a directory only
# root may enter; moved away and SIGHUP, the new files are opened by the
# files helper (root's), so the rows go on, into files root owns, while
# the monitor itself runs as nobody.
rot="$work/rotate"
mkdir -m 700 "$rot"
# A device behind a link is written to, not rotated: SIGHUP keeps it.
ln -s /dev/null "$rot/null-link"
ip netns exec "$a" "$bin" --source packet --headless --no-attribution --csv "$rot/r.csv" \
	--alerts "$rot/al.jsonl" --write "$rot/null-link" 2>"$work/rot.err" &
rmon=$!
for _ in $(seq 100); do grep -q "capturing from" "$work/rot.err" && break; sleep 0.1; done
in_a ping -c 2 -i 0.2 10.81.2.2 >/dev/null
sleep 0.5
ruid=$(awk '/^Uid:/ { print $2 "/" $3 "/" $4 }' "/proc/$rmon/status")
# A SIGHUP with nothing rotated: the same file, reopened by the helper and
# appended to (one header, the rows before and the ping's after), not
# emptied nor written from its start.
before_hup=$(grep -c ',echo-re' "$rot/r.csv")
kill -HUP "$rmon"
sleep 0.5
in_a ping -c 1 10.81.2.2 >/dev/null
sleep 0.5
after_hup=$(grep -c ',echo-re' "$rot/r.csv")
headers=$(grep -c '^timestamp,' "$rot/r.csv")
check reopen-no-truncation "SIGHUP without rotation: $before_hup rows before, $after_hup after a ping, $headers header; $(grep -c 'SIGHUP:' "$work/rot.err") SIGHUP errors" \
	sh -c "test '$before_hup' -ge 4 && test '$after_hup' = \$(($before_hup + 2)) && test '$headers' = 1 &&
		! grep -q 'SIGHUP:' '$work/rot.err'"
mv "$rot/r.csv" "$rot/r.csv.1"
mv "$rot/al.jsonl" "$rot/al.jsonl.1"
kill -HUP "$rmon"
for _ in $(seq 50); do [ -e "$rot/r.csv" ] && [ -e "$rot/al.jsonl" ] && break; sleep 0.1; done
in_a ping -c 3 -i 0.2 10.81.2.2 >/dev/null
sleep 0.5
kill -INT "$rmon"
wait "$rmon"
rrc=$?
old_rows=$(grep -c ',echo-re' "$rot/r.csv.1")
new_rows=$(grep -c ',echo-re' "$rot/r.csv")
summary_rows=$(grep -o ' rows=[0-9]*' "$work/rot.err" | cut -d= -f2)
owners=$(stat -c %U "$rot/r.csv" "$rot/al.jsonl" | tr '\n' ' ')
check reopen-as-nobody "monitor uid $ruid ($user); rows $old_rows before the rotation, $new_rows after (summary ${summary_rows:-?}); new files owned by $owners; exit $rrc" \
	sh -c "test '$ruid' = $(id -u "$user")/$(id -u "$user")/$(id -u "$user") && test '$rrc' = 0 && test '$old_rows' -ge 6 && test '$new_rows' -ge 6 &&
		test \$(($old_rows + $new_rows)) = '${summary_rows:-x}' && test '$owners' = 'root root ' &&
		head -n 1 '$rot/r.csv' | grep -q '^timestamp,'"
# The files helper killed: the next SIGHUP says so, and the rows go on
# into the file already open (renamed away); the run ends with exit 0.
ip netns exec "$a" "$bin" --source packet --headless --no-attribution --csv "$rot/k.csv" 2>"$work/fk.err" &
fmon=$!
for _ in $(seq 100); do grep -q "capturing from" "$work/fk.err" && break; sleep 0.1; done
fkilled=$(pgrep -P "$fmon" -f 'privsep-helper files')
kill -KILL "${fkilled:-0}"
mv "$rot/k.csv" "$rot/k.csv.1"
kill -HUP "$fmon"
for _ in $(seq 50); do grep -q "stopped answering" "$work/fk.err" && break; sleep 0.1; done
in_a ping -c 2 -i 0.2 10.81.2.2 >/dev/null
sleep 0.5
kill -INT "$fmon"
wait "$fmon"
frc=$?
fsaid=$(grep -c "files helper (pid ${fkilled:-x}) stopped answering" "$work/fk.err")
frows=$(grep -c ',echo-re' "$rot/k.csv.1")
check files-helper-killed "files helper ${fkilled:-none} killed: exit $frc; said $fsaid times ($(grep -m1 'stopped answering' "$work/fk.err")); $frows rows in the renamed file, no new one" \
	sh -c "test -n '$fkilled' && test '$frc' = 0 && test '$fsaid' = 1 && test '$frows' -ge 4 && ! test -e '$rot/k.csv'"
# --user root keeps root's uid, and needs no files helper.
ip netns exec "$a" "$bin" --source packet --headless --no-attribution --csv "$rot/root.csv" \
	--user root --duration 3 2>"$work/root.err" &
umon=$!
for _ in $(seq 100); do grep -q "capturing from" "$work/root.err" && break; sleep 0.1; done
sleep 0.3
uuid=$(awk '/^Uid:/ { print $2 "/" $3 "/" $4 }' "/proc/$umon/status")
ucaps=$(awk '/^CapEff:/ { print $2 }' "/proc/$umon/status")
uhelpers=$(pgrep -P "$umon" -fc 'privsep-helper files')
wait "$umon"
urootrc=$?
check user-root "--user root: uid $uuid, CapEff $ucaps, $uhelpers files helpers, exit $urootrc" \
	sh -c "test '$uuid' = 0/0/0 && test '$ucaps' = 0000000000000000 && test '$uhelpers' = 0 && test '$urootrc' = 0"
# A user named by --user must exist; the run says so before it starts.
ip netns exec "$a" "$bin" --source packet --headless --csv /dev/null --user icmpmon-no-such-user \
	--duration 1 >/dev/null 2>"$work/user.err"
urc=$?
check user-unknown "--user icmpmon-no-such-user: exit $urc, $(head -n 1 "$work/user.err")" \
	sh -c "test '$urc' = 1 && grep -q 'no such user' '$work/user.err' && ! grep -q 'capturing from' '$work/user.err'"
# Root of a user namespace that maps no other uid (unshare -r): the default
# user is skipped with a message and the run goes on; a named one stops it.
unshare -rn "$bin" --source packet -i lo --headless --csv /dev/null --duration 1 2>"$work/userns.err"
nsrc=$?
unshare -rn "$bin" --source packet -i lo --headless --csv /dev/null --duration 1 --user nobody \
	2>"$work/userns-named.err"
nsnamed=$?
check user-namespace "unshare -r: default exit $nsrc ($(head -n 1 "$work/userns.err")); --user nobody exit $nsnamed ($(head -n 1 "$work/userns-named.err"))" \
	sh -c "test '$nsrc' = 0 && grep -q 'not mapped in this user namespace): the monitor keeps root' '$work/userns.err' &&
		test '$nsnamed' = 1 && grep -q 'cannot become it' '$work/userns-named.err' &&
		! grep -q 'capturing from' '$work/userns-named.err'"

# The rows of kind $1 (and quoted destination port $2, if given) as
# "pid comm cgroup inner_proto inner_sport info", by column name (schema
# v2); "-" for an empty cell, so that an unattributed row still counts.
rows_of() {
	python3 - "$work/a.csv" "$1" "${2:-}" <<'PYEOF'
import csv, sys
for r in csv.DictReader(open(sys.argv[1])):
    if r["kind"] == sys.argv[2] and sys.argv[3] in ("", r["inner_dport"]):
        print(*(r[k] or "-" for k in ("pid", "comm", "cgroup", "inner_proto", "inner_sport", "info")))
PYEOF
}
unreach=$(rows_of port-unreachable 9)
nobody_pid=$(cat "$work/nobodyclient.pid" 2>/dev/null)
nobody=$(rows_of port-unreachable 10)
check other-user "the port-unreachable of a process of uid 65534 names it ($nobody_pid nobodyclient): $nobody" \
	sh -c "echo '$nobody' | grep -q '^$nobody_pid nobodyclient '"
check udp-pid "port-unreachable rows name the UDP client ($udp_pid udpclient): $(echo "$unreach" | sort | uniq -c | tr '\n' ';')" \
	sh -c "[ \$(echo '$unreach' | grep -c .) -ge 1 ] && echo '$unreach' | awk -v p=$udp_pid '\$1 != p || \$2 != \"udpclient\" { exit 1 }'"
check cgroup "the UDP client's rows carry its cgroup /$cg_name" \
	sh -c "echo '$unreach' | awk -v g=/$cg_name '\$3 != g { exit 1 }'"
frag=$(rows_of frag-needed)
check frag-pid "frag-needed rows name the TCP sender ($tcp_pid tcpclient): $(echo "$frag" | sort | uniq -c | tr '\n' ';')" \
	sh -c "[ -n '$frag' ] && echo '$frag' | awk -v p=$tcp_pid '\$1 != p || \$2 != \"tcpclient\" || \$4 != 6 || \$6 != \"mtu=1400\" { exit 1 }'"
mtu=$(python3 -c "
import json
s = json.load(open('$work/a.json'))['snapshot']
for m in s['path_mtu']:
    print(m['destination'], m['smallest'], m['smallest_reporter'], m['reports'])")
check mtu-map "path-MTU map: $mtu" sh -c "echo '$mtu' | grep -q '^10.81.2.2 1400 10.81.1.1 [1-9]'"
hurt=$(grep -A3 "who got hurt" "$work/a.err" | tr '\n' ' ')
check hurt "the summary says who got hurt: $hurt" \
	sh -c "echo '$hurt' | grep -q 'udpclient\[$udp_pid\]' && echo '$hurt' | grep -q 'tcpclient\[$tcp_pid\]'"
check mtu-summary "the summary shows the MTU map" grep -q "10.81.2.2: 1400 from 10.81.1.1" "$work/a.err"
pings=$(python3 - "$work/a.csv" <<'PYEOF'
import csv, sys
print(" ".join(r["comm"] or "?" for r in csv.DictReader(open(sys.argv[1])) if r["kind"] == "echo-request"))
PYEOF
)
check echo-sender "echo requests sent from a name ping, a raw socket's then a ping socket's: $pings" \
	test "$pings" = "ping ping ping ping ping ping"
pinged=$(python3 - "$work/a.csv" <<'PYEOF'
import csv, sys
print(" ".join(r["kind"] + "/" + (r["comm"] or "?") for r in csv.DictReader(open(sys.argv[1]))
               if r["inner_proto"] == "1" and r["inner_dst"] == "10.99.0.1"))
PYEOF
)
check ping-error "r's unreachables about ping's requests name ping: $pinged" \
	sh -c "echo '$pinged' | grep -q 'unreachable/ping' && ! echo '$pinged' | grep -q '/?'"

# --- 2: why no reply, with icmpmon in r (the responder)
snmp() { in_r awk '/^Icmp:/ { if (!h) { split($0, n); h = 1 } else { for (i = 2; i <= NF; i++) if (n[i] == "'"$1"'") print $i } }' /proc/net/snmp; }
in_r sysctl -qw net.ipv4.icmp_ratemask=6169 net.ipv4.icmp_ratelimit=1000
ip netns exec "$r" "$bin" --source packet --headless --csv "$work/r.csv" --alerts "$work/r-alerts.jsonl" \
	--summary-json "$work/r.json" --duration 9 --metrics-listen 127.0.0.1:9812 2>"$work/r.err" &
mon=$!
for _ in $(seq 100); do grep -q "capturing from" "$work/r.err" && break; sleep 0.1; done
# A forwarded flow is nobody's here, even with a local socket on its port:
# a's datagrams from port 5353 to a closed port of c, while r listens on
# 0.0.0.0:5353.
in_r python3 -c "
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 5353)); time.sleep(4)" &
disown
sleep 0.3
in_a python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.81.1.2', 5353))
for _ in range(3): s.sendto(b'x', ('10.81.2.2', 11))"
before=$(snmp OutRateLimitHost)
in_a ping -q -c 200 -i 0.005 10.81.1.1 >"$work/ping-rl.txt" 2>&1
after=$(snmp OutRateLimitHost)
sleep 1.5
in_r curl -s http://127.0.0.1:9812/metrics >"$work/r.metrics"
exported=$(sed -n 's/^icmpmon_kernel_icmp_total{counter="Icmp.OutRateLimitHost"} //p' "$work/r.metrics")
check metrics "/metrics: OutRateLimitHost ${exported:-none} (the kernel's: $after), local-rate-limit active" \
	sh -c "[ '${exported:-x}' = '$after' ] && grep -q '^icmpmon_anomaly_active{flag=\"local-rate-limit\"} 1' '$work/r.metrics'"
in_r sysctl -qw net.ipv4.icmp_ratemask=6168 net.ipv4.icmp_echo_ignore_all=1
sleep 1.2
in_a ping -q -c 5 -i 0.2 10.81.1.1 >/dev/null 2>&1
sleep 2.5
in_r sysctl -qw net.ipv4.icmp_echo_ignore_all=0
wait $mon
delta=$((after - before))
rl=$(grep '"local-rate-limit"' "$work/r-alerts.jsonl" | head -1)
check rate-limit "OutRateLimitHost +$delta in r while a flooded it; alert: ${rl:-none}" \
	sh -c "[ $delta -gt 0 ] && echo '$rl' | grep -q 'OutRateLimitHost +' && echo '$rl' | grep -q 'icmp_ratemask = 6169'"
forwarded=$(python3 - "$work/r.csv" <<'PYEOF'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["kind"] == "port-unreachable" and r["inner_sport"] == "5353"]
print(len(rows), " ".join(sorted({r["comm"] or "-" for r in rows})))
PYEOF
)
check forwarded "errors about a forwarded flow name no process of r (r listens on its port): $forwarded" \
	sh -c "echo '$forwarded' | grep -Eq '^[1-9][0-9]* -$'"
run_delta=$(python3 -c "
import json
k = json.load(open('$work/r.json'))['snapshot']['kernel']
print(next(c['run'] for c in k['counters'] if c['name'] == 'Icmp.OutRateLimitHost'))")
check counter-delta "the summary's OutRateLimitHost growth ($run_delta) is the kernel's ($delta)" \
	test "$run_delta" = "$delta"
ig=$(grep '"echo-ignored"' "$work/r-alerts.jsonl" | head -1)
check echo-ignored "icmp_echo_ignore_all=1 and pings unanswered: ${ig:-no alert}" \
	sh -c "echo '$ig' | grep -q 'icmp_echo_ignore_all = 1'"
check kernel-summary "the summary lists the counters and sysctls" \
	sh -c "grep -q 'kernel counters during the run:.*Icmp.OutRateLimitHost +' '$work/r.err' && grep -q 'net.ipv4.icmp_ratelimit=1000' '$work/r.err'"

# --- 3: 100 000 errors quoting spoofed flows, sent from r to a
ip netns exec "$a" "$bin" --source packet --headless --csv "$work/flood.csv" --summary-json "$work/flood.json" \
	--ring-frames 65536 2>"$work/flood.err" &
mon=$!
for _ in $(seq 100); do grep -q "capturing from" "$work/flood.err" && break; sleep 0.1; done
in_r python3 - <<'PYEOF'
import random, socket, struct
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
src, dst = socket.inet_aton("10.81.1.2"), socket.inet_aton("10.81.2.2")
for i in range(100000):
    sport = 1024 + i % 60000
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, i & 0xffff, 0, 64, 17, 0, src,
                     struct.pack("!I", 0x0a000000 + i))
    udp = struct.pack("!HHHH", sport, 53, 8, 0)
    body = struct.pack("!BBHI", 3, 3, 0, 0) + ip + udp
    msg = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    s.sendto(msg, ("10.81.1.2", 0))
PYEOF
sleep 2
kill -INT $mon
wait $mon
flood=$(python3 -c "
import json
s = json.load(open('$work/flood.json'))
a = s['snapshot']['attribution']
print(s['rows'], sum(s['lost'].values()), a['asked'], a['owner'] + a['gone'] + a['hidden'] + a['no_socket'] + a['skipped'], a['skipped'], s['lookups'], a['no_socket'])")
read -r rows lost asked sum skipped lookups nosock <<<"$flood"
unreach_rows=$(grep -c ',port-unreachable,' "$work/flood.csv")
check flood-kept "100000 spoofed errors: $unreach_rows port-unreachable rows, $lost lost in capture" \
	test "$unreach_rows" = 100000 -a "$lost" = 0
check flood-counted "every one asked about is counted: asked $asked = outcomes $sum (no socket $nosock, skipped $skipped)" \
	test "$asked" = 100000 -a "$sum" = 100000
check flood-bounded "lookups bounded by what was asked: $lookups made, $skipped skipped, none attributed" \
	sh -c "[ $lookups -le 100000 ] && [ $((lookups + skipped)) -ge 100000 ] && grep -q 'attribution: 100000 messages asked about: 0 to a process' '$work/flood.err'"

echo "attribution: $pass passed, $fail failed"
[ "$fail" = 0 ]

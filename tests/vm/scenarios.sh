#!/bin/sh
# Runs inside the test VM (busybox sh, root, only lo). Prints one line per
# scenario: "SCENARIO <name> PASS|FAIL <detail>". The host (run.sh) reads
# them from the serial console.

FAILS=0
MON=icmpmon
H=vmhelper
CSV_FIELDS=25

pass() { echo "SCENARIO $1 PASS $2"; }
fail() { echo "SCENARIO $1 FAIL $2"; FAILS=$((FAILS + 1)); }

# start_mon NAME [ARGS...]: icmpmon in the background, CSV to /tmp/NAME.csv
# (or $MON_CSV), stderr to /tmp/NAME.err; returns once it has registered.
# Sets MON_PID.
start_mon() {
	name=$1
	shift
	rm -f "/tmp/$name.csv" "/tmp/$name.err"
	$MON -v --source kmod --csv "${MON_CSV:-/tmp/$name.csv}" "$@" 2>"/tmp/$name.err" &
	MON_PID=$!
	i=0
	while ! grep -q "capturing from kmod" "/tmp/$name.err" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 $MON_PID 2>/dev/null; then
			echo "start_mon $name: did not register:"
			cat "/tmp/$name.err"
			return 1
		fi
		sleep 0.1
	done
}

# stop_mon PID: SIGINT and wait; its exit status lands in RC. (Not for
# $(...): a subshell cannot wait for its parent's children.)
stop_mon() {
	kill -INT "$1"
	wait "$1"
	RC=$?
}

# rows FILE DIRECTION KIND [FAMILY]: CSV rows matching.
rows() {
	awk -F, -v d="$2" -v k="$3" -v f="${4:-}" \
		'NR > 1 && $3 == d && $10 == k && (f == "" || $5 == f) { n++ } END { print n + 0 }' "$1"
}

# bad_rows FILE: rows without exactly the schema's number of fields.
bad_rows() {
	awk -F, -v n=$CSV_FIELDS 'NF != n { bad++ } END { print bad + 0 }' "$1"
}

# snmp NAME: an Icmp counter of /proc/net/snmp (e.g. InEchos).
snmp() {
	awk -v want="$1" '$1 == "Icmp:" { if (!hdr) { for (i = 2; i <= NF; i++) col[$i] = i; hdr = 1 } else print $col[want] }' /proc/net/snmp
}

# snmp6 NAME: a counter of /proc/net/snmp6 (e.g. Icmp6InEchos).
snmp6() {
	awk -v want="$1" '$1 == want { print $2 }' /proc/net/snmp6
}

# stat NAME: a field of `icmpmon stats`.
stat() {
	$MON stats | awk -v want="$1" '$1 == want { print $2 }'
}

# accounted: "seen=... lost=..." and whether seen = delivered + lost_* (only
# exact once no batch is pending: no subscriber left).
accounted() {
	$MON stats | awk '{ v[$1] = $2 } END {
		lost = v["lost_nobufs"] + v["lost_nomem"] + v["lost_closed"] + v["lost_other"]
		printf "seen=%d delivered=%d lost=%d subscribers=%d %s\n", v["seen"], v["delivered"], lost,
			v["subscribers"], (v["seen"] == v["delivered"] + lost) ? "balanced" : "UNBALANCED" }'
}

# slab_objs [-v]: live objects of the caches a leaked subscriber or batch
# would stay in (kmalloc 128-512, randomized copies included, and skbuffs);
# -v: per cache.
slab_objs() {
	awk -v v="${1:-}" '$1 ~ /^kmalloc-(rnd-[0-9]+-)?(128|192|256|512)$/ || $1 == "skbuff_head_cache" {
		s += $2; if (v != "" && $2 > 0) printf "%s=%d ", $1, $2 } END { print s + 0 }' /proc/slabinfo
}

# slab_settled BASE: waits (up to 60 s) for the slab objects to come back
# within 512 of BASE (dying namespaces and RCU-deferred frees take a while,
# longest on PREEMPT_RT); prints the last count.
slab_settled() {
	i=0
	while n=$(slab_objs) && [ "$n" -ge $(($1 + 512)) ] && [ $i -lt 60 ]; do
		sleep 1
		i=$((i + 1))
	done
	echo "$n"
}

# starts TEXT PREFIX
starts() {
	case "$1" in "$2"*) return 0 ;; esac
	return 1
}

summary_field() {
	sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$1" | tail -n 1
}

scenario_modprobe() {
	mods=$(awk '{ printf "%s ", $1 }' /proc/modules)
	if echo " $mods" | grep -q " icmpmon " && echo " $mods" | grep -q " nf_defrag_ipv4 " &&
		echo " $mods" | grep -q " nf_defrag_ipv6 "; then
		pass modprobe "modprobe icmpmon (make install + depmod) loaded its dependencies: $mods"
	else
		fail modprobe "modules after modprobe icmpmon: $mods"
	fi
}

scenario_ping() {
	start_mon ping || { fail ping "monitor did not start"; return; }
	ie=$(snmp InEchos); ir=$(snmp InEchoReps); oe=$(snmp OutEchos); or=$(snmp OutEchoReps)
	ie6=$(snmp6 Icmp6InEchos); ir6=$(snmp6 Icmp6InEchoReplies)
	oe6=$(snmp6 Icmp6OutEchos); or6=$(snmp6 Icmp6OutEchoReplies)
	ping -c 5 -i 0.2 127.0.0.1 >/dev/null
	ping6 -c 5 -i 0.2 ::1 >/dev/null
	ie=$(($(snmp InEchos) - ie)); ir=$(($(snmp InEchoReps) - ir))
	oe=$(($(snmp OutEchos) - oe)); or=$(($(snmp OutEchoReps) - or))
	ie6=$(($(snmp6 Icmp6InEchos) - ie6)); ir6=$(($(snmp6 Icmp6InEchoReplies) - ir6))
	oe6=$(($(snmp6 Icmp6OutEchos) - oe6)); or6=$(($(snmp6 Icmp6OutEchoReplies) - or6))
	sleep 0.2
	stop_mon $MON_PID; rc=$RC
	f=/tmp/ping.csv
	got="out/req4=$(rows $f out echo-request 4) in/req4=$(rows $f in echo-request 4)"
	got="$got out/rep4=$(rows $f out echo-reply 4) in/rep4=$(rows $f in echo-reply 4)"
	got="$got out/req6=$(rows $f out echo-request 6) in/req6=$(rows $f in echo-request 6)"
	got="$got out/rep6=$(rows $f out echo-reply 6) in/rep6=$(rows $f in echo-reply 6)"
	want="out/req4=$oe in/req4=$ie out/rep4=$or in/rep4=$ir"
	want="$want out/req6=$oe6 in/req6=$ie6 out/rep6=$or6 in/rep6=$ir6"
	if [ "$rc" != 0 ]; then
		fail ping "exit status $rc: $(cat /tmp/ping.err)"
	elif [ "$oe" != 5 ] || [ "$oe6" != 5 ]; then
		fail ping "ping did not send 5+5 requests (snmp: $want)"
	elif [ "$got" != "$want" ]; then
		fail ping "csv [$got] snmp [$want]"
	elif [ "$(bad_rows $f)" != 0 ]; then
		fail ping "$(bad_rows $f) rows without $CSV_FIELDS fields"
	# Each reply is seen twice on lo (out, then in): one round trip per
	# reply, on its first row (issue 20.6).
	elif [ "$(awk -F, '$10 == "echo-reply" && $15 != "" { n++ } END { print n + 0 }' $f)" != 10 ] ||
		! grep -q "127.0.0.1 → 127.0.0.1: 5 req, 5 rep, 0 lost (0.0%)" /tmp/ping.err ||
		! grep -q "::1 → ::1: 5 req, 5 rep, 0 lost (0.0%)" /tmp/ping.err; then
		fail ping "echo pairing on lo: $(grep -e ' → ' -e 'echo:' /tmp/ping.err)"
	else
		pass ping "$got; $(grep 'echo:' /tmp/ping.err | sed 's/^icmpmon: //')"
	fi
}

scenario_port_unreachable() {
	start_mon unreach || { fail port-unreachable "monitor did not start"; return; }
	$H udp 127.0.0.1 33434
	$H udp ::1 33435
	sleep 0.2
	stop_mon $MON_PID; rc=$RC
	f=/tmp/unreach.csv
	v4=$(awk -F, '$10 == "port-unreachable" && $5 == 4 && $16 == 17 && $20 == 33434 && $17 == "127.0.0.1" { n++ } END { print n + 0 }' $f)
	v6=$(awk -F, '$10 == "port-unreachable" && $5 == 6 && $16 == 17 && $20 == 33435 && $17 == "::1" { n++ } END { print n + 0 }' $f)
	dirs=$(awk -F, '$10 == "port-unreachable" { print $3 }' $f | sort | tr '\n' ' ')
	# On lo each error passes LOCAL_OUT (out) and PRE_ROUTING (in).
	if [ "$rc" = 0 ] && [ "$v4" = 2 ] && [ "$v6" = 2 ] && [ "$dirs" = "in in out out " ]; then
		pass port-unreachable "v4=$v4 v6=$v6 directions=[$dirs]"
	else
		fail port-unreachable "rc=$rc v4=$v4 v6=$v6 directions=[$dirs] csv: $(cat $f)"
	fi
}

scenario_sigint_close() {
	start_mon sigint || { fail sigint-close "monitor did not start"; return; }
	ping -c 2 -i 0.2 127.0.0.1 >/dev/null
	# Registered, it holds no capability at all: CLOSE needs none.
	caps=$(awk '/^Cap(Eff|Prm|Bnd|Amb)/ { printf "%s%s ", $1, $2 }' /proc/$MON_PID/status)
	stop_mon $MON_PID; rc=$RC
	subs=$(stat subscribers)
	closed=$(grep -c "CLOSE acknowledged" /tmp/sigint.err)
	last=$(tail -c 1 /tmp/sigint.csv | od -An -c | tr -d ' ')
	n=$(($(wc -l </tmp/sigint.csv) - 1))
	if [ "$rc" = 0 ] && [ "$subs" = 0 ] && [ "$closed" = 1 ] && [ "$last" = '\n' ] &&
		[ "$n" = 8 ] && [ "$(bad_rows /tmp/sigint.csv)" = 0 ] &&
		[ "$caps" = "CapPrm:0000000000000000 CapEff:0000000000000000 CapBnd:0000000000000000 CapAmb:0000000000000000 " ]; then
		pass sigint-close "exit 0, CLOSE acked holding no capability, $n complete rows, subscribers 0"
	else
		fail sigint-close "rc=$rc subscribers=$subs close_acks=$closed rows=$n last=$last caps=[$caps]: $(cat /tmp/sigint.err)"
	fi
}

scenario_unprivileged() {
	$H runas 65534 $MON --source kmod --duration 5 --csv /tmp/unpriv.csv 2>/tmp/unpriv.err
	rc=$?
	if [ "$rc" = 1 ] && grep -q "needs CAP_NET_ADMIN" /tmp/unpriv.err; then
		pass unprivileged "exit 1: $(cat /tmp/unpriv.err)"
	else
		fail unprivileged "rc=$rc: $(cat /tmp/unpriv.err)"
	fi
}

# The host's policy: REGISTER and STATS need CAP_NET_ADMIN in the initial
# user namespace; root of a user namespace (unshare -rn) only with the
# module parameter userns_subscribe=1; a subscriber may ask STATS (its
# liveness probe); no alias lets an unprivileged family lookup load the
# module.
scenario_policy() {
	p=/sys/module/icmpmon/parameters/userns_subscribe
	refused="family=0 register=-1 stats=-1"
	allowed="family=0 register=0 stats=0"
	user=$($H runas 65534 $H policy)
	userns=$($H runas 65534 $H policy userns)
	echo 1 >$p
	userns_on=$($H runas 65534 $H policy userns)
	user_on=$($H runas 65534 $H policy)
	echo 0 >$p
	root=$($H policy)
	aliases=$(grep -c icmpmon "/lib/modules/$(uname -r)/modules.alias")
	rmmod icmpmon
	unloaded=$($H runas 65534 $H policy)
	loaded=$(grep -c '^icmpmon ' /proc/modules)
	modprobe icmpmon
	# Without privilege, the running monitor's liveness STATS is answered.
	start_mon policy --duration 8 || { fail policy "monitor did not start"; return; }
	sleep 7
	stop_mon $MON_PID
	probe_refused=$(grep -c "STATS request failed\|no longer has our subscription" /tmp/policy.err)
	detail="user: $user; userns: $userns; userns with the parameter: $userns_on; user with it: $user_on; root: $root; aliases $aliases; after rmmod: $unloaded, loaded $loaded; monitor rc=$RC"
	if starts "$user" "$refused extack=\"REGISTER needs CAP_NET_ADMIN in the initial user namespace" &&
		starts "$userns" "$refused" && starts "$userns_on" "$allowed" &&
		starts "$user_on" "$refused" && starts "$root" "$allowed" &&
		[ "$aliases" = 0 ] && [ "$unloaded" = "family=-2" ] && [ "$loaded" = 0 ] &&
		[ "$RC" = 0 ] && [ "$probe_refused" = 0 ]; then
		pass policy "$detail"
	else
		fail policy "$detail; $(cat /tmp/policy.err)"
	fi
}

scenario_sigkill() {
	start_mon killed || { fail sigkill "monitor did not start"; return; }
	before=$(stat subscribers)
	kill -KILL $MON_PID
	wait $MON_PID 2>/dev/null
	after=$(stat subscribers)
	start_mon again || { fail sigkill "second monitor did not register"; return; }
	ping -c 2 -i 0.2 127.0.0.1 >/dev/null
	stop_mon $MON_PID; rc=$RC
	n=$(($(wc -l </tmp/again.csv) - 1))
	if [ "$before" = 1 ] && [ "$after" = 0 ] && [ "$rc" = 0 ] && [ "$n" = 8 ]; then
		pass sigkill "subscribers 1 -> 0 after SIGKILL; new monitor got $n rows"
	else
		fail sigkill "subscribers before=$before after=$after; rc=$rc rows=$n"
	fi
}

scenario_two_monitors() {
	start_mon mon_a || { fail two-monitors "first monitor did not start"; return; }
	a=$MON_PID
	start_mon mon_b || { fail two-monitors "second monitor did not start"; return; }
	b=$MON_PID
	subs=$(stat subscribers)
	ping -c 3 -i 0.2 127.0.0.1 >/dev/null
	sleep 0.2
	stop_mon $a; rca=$RC
	stop_mon $b; rcb=$RC
	na=$(($(wc -l </tmp/mon_a.csv) - 1))
	# Both see every record: same rows, same timestamps, same order. The
	# process columns (pid, comm, cgroup) are each monitor's own lookup,
	# which a ping that has already exited can escape.
	cut -d, -f1-21,25- /tmp/mon_a.csv >/tmp/mon_a.cut
	cut -d, -f1-21,25- /tmp/mon_b.csv >/tmp/mon_b.cut
	if [ "$subs" = 2 ] && [ "$rca$rcb" = 00 ] && [ "$na" = 12 ] && cmp -s /tmp/mon_a.cut /tmp/mon_b.cut; then
		pass two-monitors "both received the same $na rows"
	else
		fail two-monitors "subscribers=$subs rc=$rca/$rcb rows a=$na b=$(($(wc -l </tmp/mon_b.csv) - 1))"
	fi
}

scenario_table_full() {
	max=$(cat /sys/module/icmpmon/parameters/max_subscribers)
	$H hold "$max" 30 >/tmp/hold.out 2>&1 &
	holder=$!
	i=0
	while ! grep -q held /tmp/hold.out && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	# --duration: should it register after all, fail instead of hanging.
	$MON --source kmod --duration 5 --csv /tmp/full.csv 2>/tmp/full.err
	rc=$?
	kill $holder
	wait $holder 2>/dev/null
	sleep 0.2
	subs=$(stat subscribers)
	if [ "$rc" = 1 ] && grep -q "maximum number of monitors" /tmp/full.err && [ "$subs" = 0 ]; then
		pass table-full "max_subscribers=$max held, next monitor: exit 1, EBUSY explained"
	else
		fail table-full "rc=$rc subscribers after=$subs: $(cat /tmp/hold.out /tmp/full.err)"
	fi
}

# Hooks per need (issue 22): the module registers only the hooks its
# subscribers' masks need, and unregisters those none needs any more. Its
# packets counter counts ICMP messages at the hooks registered (on lo
# each message passes two: 3 pings are 12 passes per family).
# icmp_passes / icmp6_passes: echo messages of each family, sent and
# received (/proc/net/snmp and snmp6).
icmp_passes() {
	echo $(($(snmp InEchos) + $(snmp InEchoReps) + $(snmp OutEchos) + $(snmp OutEchoReps)))
}
icmp6_passes() {
	echo $(($(snmp6 Icmp6InEchos) + $(snmp6 Icmp6InEchoReplies) + $(snmp6 Icmp6OutEchos) + $(snmp6 Icmp6OutEchoReplies)))
}
# pings_seen: hook passes counted while 3 pings and 3 ping6 go on lo,
# with the snmp deltas: "hooks v4 v6".
pings_seen() {
	p0=$(stat packets); a0=$(icmp_passes); b0=$(icmp6_passes)
	ping -c 3 -i 0.2 127.0.0.1 >/dev/null
	ping6 -c 3 -i 0.2 ::1 >/dev/null
	echo "$(($(stat packets) - p0)) $(($(icmp_passes) - a0)) $(($(icmp6_passes) - b0))"
}
# hold_sub NAME FAMILIES: a subscriber socket of those families; its PID.
hold_sub() {
	$H hold 1 60 "$2" >"/tmp/$1.out" 2>&1 &
	i=0
	while ! grep -q held "/tmp/$1.out" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	HELD=$!
}
scenario_hooks_per_need() {
	hold_sub hold4 1
	h4=$HELD
	subs=$(stat subscribers)
	# One subscriber of IPv4 alone: IPv4's hooks only.
	set -- $(pings_seen)
	only4="$1 of $2 v4 + $3 v6"
	ok=$([ "$subs" = 1 ] && [ "$2" = 12 ] && [ "$3" = 12 ] && [ "$1" = 12 ] && echo y)
	# Another of both families, then it leaves: IPv6's hooks go with it.
	hold_sub hold46 3
	h46=$HELD
	set -- $(pings_seen)
	both="$1 of $2 v4 + $3 v6"
	[ "$1" = 24 ] && [ "$2" = 12 ] && [ "$3" = 12 ] || ok=
	kill $h46
	wait $h46 2>/dev/null
	set -- $(pings_seen)
	after="$1 of $2 v4 + $3 v6"
	[ "$1" = 12 ] && [ "$2" = 12 ] && [ "$3" = 12 ] || ok=
	kill $h4
	wait $h4 2>/dev/null
	set -- $(pings_seen)
	none="$1"
	[ "$1" = 0 ] || ok=
	if [ -n "$ok" ]; then
		pass hooks-per-need "hook passes counted: IPv4 subscriber $only4; with an IPv4+IPv6 one $both; once it left $after; none left $none"
	else
		fail hooks-per-need "subscribers=$subs; hook passes: IPv4 subscriber $only4 (want 12 of 12 + 12), both $both (24), after $after (12), none $none (0): $(cat /tmp/hold4.out /tmp/hold46.out)"
	fi
}

scenario_bad_netlink() {
	if $H badmsg >/tmp/badmsg.out 2>&1 && [ "$(stat subscribers)" = 0 ]; then
		pass bad-netlink "$(grep -c ' ok ' /tmp/badmsg.out) malformed/invalid requests answered with error acks"
	else
		fail bad-netlink "$(cat /tmp/badmsg.out)"
	fi
	sed 's/^/  /' /tmp/badmsg.out
}

scenario_flood() {
	start_mon flood --alerts /tmp/flood.alerts || { fail flood "monitor did not start"; return; }
	oe=$(snmp OutEchos)
	$H flood 127.0.0.1 3 >/tmp/flood.out
	oe=$(($(snmp OutEchos) - oe))
	sleep 0.3
	stop_mon $MON_PID; rc=$RC
	sent=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' /tmp/flood.out)
	n=$(($(wc -l </tmp/flood.csv) - 1))
	e=/tmp/flood.err
	lost="$(summary_field $e kernel_lost)/$(summary_field $e missing_batches)/$(summary_field $e socket_overruns)/$(summary_field $e channel_dropped)"
	rate=$(summary_field $e packets_per_s)
	seen=$(stat seen); delivered=$(stat delivered)
	# /proc/net/icmpmon shows the same counters as STATS.
	proc="$(awk '$1 == "seen" || $1 == "delivered" { print $2 }' /proc/net/icmpmon | tr '\n' ' ')"
	acc=$(accounted)
	detail="sent=$sent snmp_out_echos=$oe rows=$n kernel: $acc proc=[$proc]; monitor lost k/b/s/c=$lost; $(cat /tmp/flood.out); monitor_records_per_s=$rate"
	if [ "$rc" = 0 ] && [ "$sent" = "$oe" ] && [ "$n" = $((4 * sent)) ] &&
		[ "${acc% balanced}" != "$acc" ] && [ "$lost" = "0/0/0/0" ] && [ "$(stat subscribers)" = 0 ] &&
		[ "$proc" = "$seen $delivered " ] &&
		grep -q '"flag":"echo-flood","subject":"127.0.0.1"' /tmp/flood.alerts; then
		pass flood "$detail; alert: $(head -c 160 /tmp/flood.alerts)"
	else
		fail flood "rc=$rc $detail"
	fi
}

scenario_rmmod() {
	start_mon bye || { fail rmmod "monitor did not start"; return; }
	ping -c 2 -i 0.2 127.0.0.1 >/dev/null
	rmmod icmpmon
	rmrc=$?
	i=0
	while kill -0 $MON_PID 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	wait $MON_PID
	rc=$?
	n=$(($(wc -l </tmp/bye.csv) - 1))
	# BYE carries the tail: the monitor's own summary balances.
	tail="kernel_seen=$(summary_field /tmp/bye.err kernel_seen) records=$(summary_field /tmp/bye.err records) kernel_lost=$(summary_field /tmp/bye.err kernel_lost)"
	if [ "$rmrc" = 0 ] && [ "$rc" = 0 ] && grep -q "module was unloaded" /tmp/bye.err && [ "$n" = 8 ] &&
		[ "$tail" = "kernel_seen=8 records=8 kernel_lost=0" ]; then
		pass rmmod "monitor got BYE, exit 0, $n rows kept, $tail: $(grep 'module was unloaded' /tmp/bye.err | head -n 1)"
	else
		fail rmmod "rmmod=$rmrc rc=$rc rows=$n $tail: $(cat /tmp/bye.err)"
	fi
	# The module loads again and starts from zero.
	modprobe icmpmon && [ "$(stat seen)" = 0 ] ||
		fail reload "icmpmon.ko did not load again cleanly"
}

# Registering while a flood runs: batches that arrive before REGISTER's ACK
# are kept (none missing), three times over.
scenario_register_under_load() {
	detail=""
	good=0
	for i in 1 2 3; do
		$H flood 127.0.0.1 4 >/tmp/rul.flood &
		fl=$!
		sleep 0.3
		start_mon rul || { wait $fl; continue; }
		wait $fl
		sleep 0.2
		stop_mon $MON_PID; rc=$RC
		e=/tmp/rul.err
		miss=$(summary_field $e missing_batches); klost=$(summary_field $e kernel_lost)
		recs=$(summary_field $e records)
		detail="$detail [rc=$rc records=$recs missing_batches=$miss kernel_lost=$klost]"
		[ "$rc" = 0 ] && [ "$miss" = 0 ] && [ "$klost" = 0 ] && [ "${recs:-0}" -gt 100 ] && good=$((good + 1))
	done
	if [ "$good" = 3 ]; then
		pass register-under-load "$detail"
	else
		fail register-under-load "$detail"
	fi
}

# Losses after the last delivered batch reach the monitor only in CLOSE's
# reply (the tail): a monitor stopped (SIGSTOP) through a flood with a small
# buffer loses the end of it, and its own summary still balances:
# kernel_seen = records + kernel_lost, and kernel_seen is what the module
# counted for it.
scenario_close_tail() {
	seen0=$(stat seen)
	start_mon tail --socket-buffer 65536 || { fail close-tail "monitor did not start"; return; }
	kill -STOP $MON_PID
	$H flood 127.0.0.1 1 >/dev/null
	kill -CONT $MON_PID
	stop_mon $MON_PID
	e=/tmp/tail.err
	ks=$(summary_field $e kernel_seen)
	r=$(summary_field $e records)
	kl=$(summary_field $e kernel_lost)
	seen=$(($(stat seen) - seen0))
	detail="monitor: kernel_seen=$ks records=$r kernel_lost=$kl missing_batches=$(summary_field $e missing_batches); module: seen=$seen; rc=$RC"
	if [ "$RC" = 0 ] && [ -n "$ks" ] && [ "$ks" = $((r + kl)) ] && [ "$ks" = "$seen" ] && [ "${kl:-0}" -gt 0 ]; then
		pass close-tail "$detail"
	else
		fail close-tail "$detail: $(tail -n 3 $e)"
	fi
}

# A BYE lost to a full socket buffer (the monitor is stopped while a flood
# fills it, then the module is removed): once running again the monitor
# notices the module is gone by its periodic STATS, and ends cleanly.
scenario_lost_bye() {
	start_mon lostbye --socket-buffer 65536 || { fail lost-bye "monitor did not start"; return; }
	kill -STOP $MON_PID
	$H flood 127.0.0.1 1 >/dev/null
	rmmod icmpmon
	rmrc=$?
	kill -CONT $MON_PID
	t0=$(date +%s)
	i=0
	while kill -0 $MON_PID 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	took=$(($(date +%s) - t0))
	kill -INT $MON_PID 2>/dev/null
	wait $MON_PID
	rc=$?
	modprobe icmpmon
	why=$(grep -o "went away without a BYE[^;]*\|module was unloaded" /tmp/lostbye.err | head -n 1)
	if [ "$rmrc" = 0 ] && [ "$rc" = 0 ] && [ "$i" -lt 100 ] && [ "${why#went away without a BYE}" != "$why" ]; then
		pass lost-bye "BYE lost to a full buffer; the monitor noticed within ${took}s: $why; $(grep -o 'socket overruns [0-9]*' /tmp/lostbye.err | head -n 1)"
	else
		fail lost-bye "rmmod=$rmrc rc=$rc waited=${i}0ms why=[$why]: $(tail -n 2 /tmp/lostbye.err)"
	fi
}

# A C program that casts the records (vmhelper records) and icmpmon read the
# same traffic: the same records, field for field.
scenario_records_abi() {
	start_mon abi || { fail records-abi "monitor did not start"; return; }
	rm -f /tmp/abi.c.csv /tmp/abi.c.err
	$H records 3 >/tmp/abi.c.csv 2>/tmp/abi.c.err &
	reader=$!
	i=0
	while ! grep -q registered /tmp/abi.c.err 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	ping -c 3 -i 0.2 127.0.0.1 >/dev/null
	ping6 -c 2 -i 0.2 ::1 >/dev/null
	$H udp 127.0.0.1 33434
	wait $reader
	rrc=$?
	stop_mon $MON_PID; rc=$RC
	awk -F, 'NR > 1 { print $1 "," $3 "," $5 "," $14 }' /tmp/abi.csv | sort >/tmp/abi.rust
	sort /tmp/abi.c.csv >/tmp/abi.c
	n=$(wc -l </tmp/abi.c)
	if [ "$rc$rrc" = 00 ] && [ "$n" = 22 ] && cmp -s /tmp/abi.rust /tmp/abi.c; then
		pass records-abi "C cast reader and icmpmon agree on all $n records (timestamp, hook, family, length); $(tail -n 1 /tmp/abi.c.err)"
	else
		fail records-abi "rc=$rc reader=$rrc records=$n: $(tail -n 1 /tmp/abi.c.err); diff: $(diff /tmp/abi.rust /tmp/abi.c | head -n 6 | tr '\n' ' ')"
	fi
}

# A module whose records carry 16 header bytes more than version 2 defines,
# as a later version would send: icmpmon skips them and decodes the same.
scenario_hdr_extension() {
	rmmod icmpmon && insmod /lib/icmpmon-hdrtest.ko || { fail hdr-extension "cannot load the test build"; modprobe icmpmon; return; }
	start_mon hdr || { fail hdr-extension "monitor did not start"; rmmod icmpmon; modprobe icmpmon; return; }
	ping -c 2 -i 0.2 127.0.0.1 >/dev/null
	$H udp 127.0.0.1 33434
	sleep 0.2
	stop_mon $MON_PID; rc=$RC
	rmmod icmpmon; modprobe icmpmon
	f=/tmp/hdr.csv
	req=$(rows $f out echo-request 4); rep=$(rows $f in echo-reply 4)
	pu=$(awk -F, '$10 == "port-unreachable" && $20 == 33434 { n++ } END { print n + 0 }' $f)
	badb=$(summary_field /tmp/hdr.err bad_batches); perr=$(summary_field /tmp/hdr.err parse_errors)
	if [ "$rc" = 0 ] && [ "$req" = 2 ] && [ "$rep" = 2 ] && [ "$pu" = 2 ] && [ "$badb" = 0 ] && [ "$perr" = 0 ]; then
		pass hdr-extension "records with 48-byte headers: echo out/in $req/$rep, port-unreachable $pu, bad batches 0, parse errors 0"
	else
		fail hdr-extension "rc=$rc req=$req rep=$rep pu=$pu bad_batches=$badb parse_errors=$perr: $(tail -n 2 /tmp/hdr.err)"
	fi
}

# STATS (no privilege needed) hammered while the module is loaded and
# unloaded 30 times with a subscriber each time and namespaces churning:
# no reply may carry freed memory (slub_debug=P poisons it with 0x6b).
scenario_unload_stats() {
	rm -f /tmp/us.stop
	$H statsloop /tmp/us.stop >/tmp/us.out 2>&1 &
	loop=$!
	$H nschurn /tmp/us.stop >/tmp/us.churn 2>&1 &
	churn=$!
	bad=0
	for i in $(seq 30); do
		modprobe icmpmon || bad=$((bad + 1))
		$H hold 1 5 >/dev/null 2>&1 &
		holder=$!
		sleep 0.05
		rmmod icmpmon || bad=$((bad + 1))
		kill $holder 2>/dev/null
		wait $holder 2>/dev/null
	done
	touch /tmp/us.stop
	wait $loop
	lrc=$?
	wait $churn
	modprobe icmpmon
	replies=$(sed -n 's/.*replies=\([0-9]*\).*/\1/p' /tmp/us.out)
	if [ "$lrc" = 0 ] && [ "$bad" = 0 ] && [ "${replies:-0}" -gt 100 ]; then
		pass unload-stats "30 load/unload cycles: $(cat /tmp/us.out); $(cat /tmp/us.churn)"
	else
		fail unload-stats "rc=$lrc failed module ops=$bad: $(cat /tmp/us.out /tmp/us.churn)"
	fi
}

# A subscriber SIGKILLed just as rmmod starts while an unprivileged process
# binds its portid as soon as it is free: that process must get no RECORDS
# and no BYE.
scenario_portid_theft() {
	rm -f /tmp/pt.stop
	$H nschurn /tmp/pt.stop >/tmp/pt.churn 2>&1 &
	churn=$!
	$H steal 25 >/tmp/pt.out 2>&1
	src=$?
	touch /tmp/pt.stop
	wait $churn
	modprobe icmpmon 2>/dev/null
	bound=$(sed -n 's/.*bound=\([0-9]*\).*/\1/p' /tmp/pt.out)
	if [ "$src" = 0 ] && [ "${bound:-0}" -ge 12 ]; then
		pass portid-theft "$(cat /tmp/pt.out); $(cat /tmp/pt.churn)"
	else
		fail portid-theft "rc=$src (bound in fewer than half the trials, or messages stolen): $(cat /tmp/pt.out)"
	fi
}

# soak_rows FILE: its records (less the header), and the file goes (the
# flood fills the VM's memory otherwise).
soak_rows() {
	n=$(($(wc -l <"$1") - 1))
	rm -f "$1"
	echo "$n"
}

# The stress (one kernel per run): a ping flood while monitors register, are
# SIGKILLed and register again, and namespaces with subscribers come and go;
# then every record is accounted for, rmmod works and nothing leaked. On
# the monitor's side, one icmpmon stays subscribed throughout (stress-soak):
# its CSV is renamed and reopened (SIGHUP) every 2 s; its resident memory
# and open descriptors after a third of the time must hold to the end
# (memory within +10 % or 2 MiB, whichever is more: its resident set is
# about 7 MB, and the allocator's growth under the churn alone is near
# 1 MB), its rows in all files must be its summary's, and
# it must exit 0 with its kernel tail balanced. Its channel and tables are
# small (--channel-capacity 8, --max-peers 64: 1 024 pending requests):
# under TCG it cannot keep up with the flood, so unanswered requests pile
# up, and default bounds (1 024 batches; 65 536 requests, a table that
# takes its bound in one step) would still be filling, bounded but not
# yet flat, when the check starts. Growth after that is a leak.
scenario_stress() {
	secs=$(cat /stress)
	[ "$secs" -gt 0 ] 2>/dev/null || return
	slab0=$(slab_objs)
	rm -f /tmp/st.stop /tmp/soak.csv*
	MON_CSV=/tmp/soak.csv start_mon soak --channel-capacity 8 --max-peers 64 \
		--summary-json /tmp/soak.json ||
		fail stress-soak "the long-lived monitor did not start"
	soak=$MON_PID
	$H flood 127.0.0.1 "$secs" >/tmp/st.flood &
	flood=$!
	$H nschurn /tmp/st.stop >/tmp/st.churn 2>&1 &
	churn=$!
	cycles=0
	rotations=0
	soak_counted=0
	prev=""
	rss0=""
	rssmax=0
	start=$(date +%s)
	end=$((start + secs))
	next_rot=$((start + 2))
	while [ "$(date +%s)" -lt "$end" ]; do
		now=$(date +%s)
		if [ "$now" -ge "$next_rot" ]; then
			rotations=$((rotations + 1))
			mv /tmp/soak.csv "/tmp/soak.csv.$rotations"
			kill -HUP "$soak"
			# The one before was reopened away from 2 s ago.
			[ -n "$prev" ] && soak_counted=$((soak_counted + $(soak_rows "$prev")))
			prev="/tmp/soak.csv.$rotations"
			next_rot=$((now + 2))
		fi
		rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$soak/status")
		if [ -z "$rss0" ] && [ "$now" -ge $((start + secs / 3)) ]; then
			rss0=$rss
			fd0=$(ls "/proc/$soak/fd" | wc -l)
		elif [ -n "$rss0" ] && [ "${rss:-0}" -gt "$rssmax" ]; then
			rssmax=$rss
		fi
		$MON --source kmod --csv /dev/null 2>/dev/null &
		m=$!
		$H hold 2 1 >/dev/null 2>&1 &
		h=$!
		sleep 0.3
		kill -KILL $m
		wait $m 2>/dev/null
		wait $h 2>/dev/null
		cycles=$((cycles + 1))
	done
	touch /tmp/st.stop
	wait $flood
	wait $churn
	fd1=$(ls "/proc/$soak/fd" | wc -l)
	stop_mon "$soak"
	soak_rc=$RC
	for f in $prev /tmp/soak.csv; do
		[ -e "$f" ] && soak_counted=$((soak_counted + $(soak_rows "$f")))
	done
	soak_want=$(sed -n 's/^  "rows": *\([0-9]*\).*/\1/p' /tmp/soak.json | head -n 1)
	soak_seen=$(summary_field /tmp/soak.err kernel_seen)
	soak_records=$(summary_field /tmp/soak.err records)
	soak_lost=$(summary_field /tmp/soak.err kernel_lost)
	soak_detail="exit $soak_rc; rows $soak_counted in $((rotations + 1)) files, summary ${soak_want:-?}; resident ${rss0:-?} kB after $((secs / 3))s, at most $rssmax kB after; descriptors ${fd0:-?} then $fd1; kernel_seen ${soak_seen:-?} = records ${soak_records:-?} + kernel_lost ${soak_lost:-?}"
	if [ "$soak_rc" = 0 ] && [ -n "$soak_want" ] && [ "$soak_counted" = "$soak_want" ] &&
		[ "$soak_counted" -gt 1000 ] && [ "$rotations" -ge 3 ] && [ -n "$rss0" ] &&
		[ "$rssmax" -le $((rss0 + (rss0 / 10 > 2048 ? rss0 / 10 : 2048))) ] && [ "${fd0:-x}" = "$fd1" ] &&
		[ -n "$soak_seen" ] && [ "$soak_seen" = $((soak_records + soak_lost)) ]; then
		pass stress-soak "$soak_detail"
	else
		fail stress-soak "$soak_detail: $(tail -n 3 /tmp/soak.err)"
	fi
	sleep 2
	acc=$(accounted)
	rmmod icmpmon
	rmrc=$?
	slab1=$(slab_settled "$slab0")
	modprobe icmpmon
	grow=$((slab1 - slab0))
	detail="${secs}s, $cycles monitor kill cycles, $(cat /tmp/st.churn); $(cat /tmp/st.flood); $acc; rmmod=$rmrc; slab objects $slab0 -> $slab1"
	[ "$grow" -lt 512 ] || detail="$detail ($(slab_objs -v))"
	case "$acc" in
	*" balanced"*) ok_acc=1 ;;
	*) ok_acc=0 ;;
	esac
	if [ "$ok_acc" = 1 ] && [ "$rmrc" = 0 ] && [ "$grow" -lt 512 ] && echo "$acc" | grep -q "subscribers=0"; then
		pass stress "$detail"
	else
		fail stress "$detail"
	fi
}

# The benchmark (first kernel of the matrix; report only): a 5-second
# ping -f on lo, 5 interleaved rounds, alone / icmpmon --csv /dev/null /
# tcpdump -w /dev/null.
bench_pingf() {
	/usr/bin/ping -f -w 5 -q 127.0.0.1 2>/dev/null | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p'
}

median() {
	sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

run_bench() {
	[ -f /bench ] || return
	: >/tmp/b.alone; : >/tmp/b.mon; : >/tmp/b.dump; : >/tmp/b.cpu; : >/tmp/b.lost
	for round in 1 2 3 4 5; do
		bench_pingf >>/tmp/b.alone
		MON_CSV=/dev/null
		start_mon bench || { echo "BENCH icmpmon did not start"; return; }
		MON_CSV=
		bench_pingf >>/tmp/b.mon
		t=$(awk '{ print $14 + $15 }' /proc/$MON_PID/stat)
		stop_mon $MON_PID
		recs=$(summary_field /tmp/bench.err records)
		echo "$t $recs" | awk '{ if ($2 > 0) printf "%.2f\n", $1 * 10000 / $2 }' >>/tmp/b.cpu
		e=/tmp/bench.err
		echo $(($(summary_field $e kernel_lost) + $(summary_field $e missing_batches) + $(summary_field $e socket_overruns) + $(summary_field $e channel_dropped))) >>/tmp/b.lost
		tcpdump -i lo -w /dev/null -Z root 'icmp or icmp6' 2>/dev/null &
		td=$!
		sleep 1
		bench_pingf >>/tmp/b.dump
		kill -INT $td
		wait $td 2>/dev/null
	done
	a=$(median </tmp/b.alone); m=$(median </tmp/b.mon); d=$(median </tmp/b.dump)
	echo "BENCH ping -f 5 s on lo, 5 interleaved rounds, median requests: alone $a, icmpmon $m ($(echo "$m $a" | awk '{ printf "%.2f", $1 / $2 }') kept), tcpdump $d ($(echo "$d $a" | awk '{ printf "%.2f", $1 / $2 }') kept); icmpmon lost per round: $(tr '\n' ' ' </tmp/b.lost); icmpmon CPU µs per record (median): $(median </tmp/b.cpu)"
}

scenario_modprobe
scenario_ping
scenario_port_unreachable
scenario_sigint_close
scenario_unprivileged
scenario_policy
scenario_sigkill
scenario_two_monitors
scenario_table_full
scenario_hooks_per_need
scenario_bad_netlink
# The dashboard on a pseudo-terminal (no tmux here): it draws the kmod
# source and the pinging pair, and q leaves with CLOSE done.
scenario_dashboard() {
	rm -f /tmp/dash.out /tmp/dash.err /tmp/dash.go
	$H pty /tmp/dash.out /tmp/dash.go q $MON --source kmod 2>/tmp/dash.err &
	pid=$!
	# Drawn means registered: the dashboard starts once the source is open.
	i=0
	while ! grep -q " icmpmon " /tmp/dash.out 2>/dev/null && [ $i -lt 100 ]; do
		i=$((i + 1))
		sleep 0.1
	done
	ping -c 4 -i 0.2 127.0.0.1 >/dev/null
	sleep 1
	touch /tmp/dash.go
	wait $pid
	rc=$?
	subs=$(stat subscribers)
	if [ "$rc" = 0 ] && grep -q "127.0.0.1 → 127.0.0.1" /tmp/dash.out &&
		grep -q "quit from the dashboard" /tmp/dash.err &&
		grep -q "127.0.0.1 → 127.0.0.1: 4 req, 4 rep, 0 lost" /tmp/dash.err && [ "$subs" = 0 ]; then
		pass dashboard "drew 127.0.0.1 → 127.0.0.1 from kmod; q: exit 0, subscribers 0; $(grep 'echo:' /tmp/dash.err | sed 's/^icmpmon: //')"
	else
		fail dashboard "rc=$rc subscribers=$subs drawn=$(wc -c </tmp/dash.out) bytes: $(tail -n 3 /tmp/dash.err)"
	fi
}

# kernel_at_least MAJOR MINOR
kernel_at_least() {
	uname -r | awk -F'[.-]' -v a="$1" -v b="$2" '{ exit !(($1 > a) || ($1 == a && $2 >= b)) }'
}

# The BPF source (issue 21) on this kernel: from 6.4 the same rows as the
# module for the same pings, counters that balance, drops with named
# reasons, auto's choice without the module, the unprivileged refusal;
# before 6.4 a clear refusal and auto falling back to AF_PACKET.
scenario_bpf() {
	rmmod icmpmon
	if ! kernel_at_least 6 4; then
		$MON --source bpf --duration 3 --csv /tmp/bpfold.csv 2>/tmp/bpfold.err
		rc=$?
		$MON -v --csv /tmp/autoold.csv --duration 2 2>/tmp/autoold.err &
		pid=$!
		sleep 1
		ping -c 2 -i 0.2 127.0.0.1 >/dev/null
		wait $pid
		arc=$?
		if [ "$rc" = 1 ] && grep -q "needs Linux 6.4 or later" /tmp/bpfold.err &&
			[ "$arc" = 0 ] && grep -q "BPF cannot run here (needs Linux 6.4+, this is $(uname -r)); using AF_PACKET" /tmp/autoold.err &&
			grep -q "capturing from packet" /tmp/autoold.err; then
			pass bpf "before 6.4: --source bpf exit 1 [$(tail -n 1 /tmp/bpfold.err)]; auto: $(grep 'using AF_PACKET' /tmp/autoold.err)"
		else
			fail bpf "rc=$rc auto=$arc: $(cat /tmp/bpfold.err /tmp/autoold.err)"
		fi
		modprobe icmpmon
		return
	fi
	# auto without the module: bpf.
	rm -f /tmp/bpf.err
	$MON -v --csv /tmp/bpf.csv 2>/tmp/bpf.err &
	pid=$!
	i=0
	while ! grep -q "capturing from" /tmp/bpf.err 2>/dev/null && [ $i -lt 100 ] && kill -0 $pid 2>/dev/null; do
		i=$((i + 1))
		sleep 0.1
	done
	ie=$(snmp InEchos); oe=$(snmp OutEchos); ie6=$(snmp6 Icmp6InEchos); oe6=$(snmp6 Icmp6OutEchos)
	ping -c 3 -i 0.2 127.0.0.1 >/dev/null
	ping6 -c 3 -i 0.2 ::1 >/dev/null
	ie=$(($(snmp InEchos) - ie)); oe=$(($(snmp OutEchos) - oe))
	ie6=$(($(snmp6 Icmp6InEchos) - ie6)); oe6=$(($(snmp6 Icmp6OutEchos) - oe6))
	sleep 0.3
	stop_mon $pid; rc=$RC
	f=/tmp/bpf.csv
	got="out/req4=$(rows $f out echo-request 4) in/req4=$(rows $f in echo-request 4) out/req6=$(rows $f out echo-request 6) in/req6=$(rows $f in echo-request 6)"
	want="out/req4=$oe in/req4=$ie out/req6=$oe6 in/req6=$ie6"
	# Every record accounted: seen = delivered + lost, in the kernel, and
	# every delivered record read.
	acc=$(awk '/summary source=bpf/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
		END { ok = (v["seen"] == v["delivered"] + v["lost"]) && (v["records"] == v["delivered"] + v["drops_delivered"]) && v["seen"] > 0
			printf "%s seen=%s delivered=%s lost=%s drops=%s records=%s", ok ? "balanced" : "UNBALANCED", v["seen"], v["delivered"], v["lost"], v["drops_delivered"], v["records"] }' /tmp/bpf.err)
	drops=$(awk -F, '$3 == "drop"' $f | wc -l)
	unnamed=$(awk -F, '$3 == "drop" && ($25 == "" || $25 ~ /^reason-/ || $21 == "")' $f | wc -l)
	echoes=$(rows $f in echo-reply 4)
	if [ "$rc" = 0 ] && grep -q "not loaded; using BPF netfilter programs" /tmp/bpf.err &&
		[ "$got" = "$want" ] && [ "$oe" = 3 ] && [ "$echoes" = 3 ] && [ "${acc%% *}" = balanced ] &&
		[ "$unnamed" = 0 ] && [ "$(bad_rows $f)" = 0 ]; then
		pass bpf "auto → bpf; $got (= snmp); $acc; $drops drop rows, every one named ($(awk -F, '$3 == "drop" { print $25 " in " $21 }' $f | sort -u | head -n 3 | tr '\n' ';'))"
	else
		fail bpf "rc=$rc csv [$got] snmp [$want] replies in=$echoes $acc unnamed drops=$unnamed: $(grep -v -e libbpf -e ' INFO ' -e ' DEBUG ' /tmp/bpf.err | tail -n 5)"
	fi
	# Without privileges: what is missing is named.
	$H runas 65534 $MON --source bpf --duration 3 --csv /tmp/bpfu.csv 2>/tmp/bpfu.err
	rc=$?
	if [ "$rc" = 1 ] && grep -q "needs CAP_BPF and CAP_NET_ADMIN" /tmp/bpfu.err; then
		pass bpf-unprivileged "exit 1: $(cat /tmp/bpfu.err)"
	else
		fail bpf-unprivileged "rc=$rc: $(cat /tmp/bpfu.err)"
	fi
	modprobe icmpmon
}

scenario_flood
scenario_bpf
scenario_dashboard
scenario_register_under_load
scenario_records_abi
scenario_hdr_extension
scenario_close_tail
scenario_lost_bye
scenario_rmmod
scenario_unload_stats
scenario_portid_theft
scenario_stress
run_bench

if dmesg | grep -E 'Oops|WARNING:|BUG[: ]|Call Trace|Poison overwritten' >/tmp/dmesg.bad; then
	fail dmesg "$(cat /tmp/dmesg.bad)"
else
	pass dmesg "no Oops, WARNING or BUG"
fi
echo "SCENARIOS-FAILED $FAILS"

# Sourced by the namespace test and the benchmark/screenshot scripts.

# netns_pair MON PEER DEV_MON DEV_PEER NET4 NET6: two fresh namespaces
# joined by a veth pair; MON gets NET4.1/24 and NET6::1/64, PEER .2 and ::2.
# IPv6 without DAD or router advertisements, so no stray ICMPv6.
netns_pair() {
	local mon=$1 peer=$2 dm=$3 dp=$4 net4=$5 net6=$6 ns
	ip netns del "$mon" 2>/dev/null || true
	ip netns del "$peer" 2>/dev/null || true
	ip netns add "$mon"
	ip netns add "$peer"
	ip link add "$dm" type veth peer name "$dp"
	ip link set "$dm" netns "$mon"
	ip link set "$dp" netns "$peer"
	ip -n "$mon" addr add "$net4.1/24" dev "$dm"
	ip -n "$peer" addr add "$net4.2/24" dev "$dp"
	ip -n "$mon" addr add "$net6::1/64" dev "$dm" nodad
	ip -n "$peer" addr add "$net6::2/64" dev "$dp" nodad
	for ns in "$mon" "$peer"; do
		ip -n "$ns" link set lo up
		ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
	done
	ip -n "$mon" link set "$dm" up
	ip -n "$peer" link set "$dp" up
	sleep 1
}

# netns_kill NS...: kills what runs in the namespaces; netns_remove NS...:
# that, then deletes them (the test scripts' cleanup).
netns_kill() {
	local ns
	for ns in "$@"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
	done
	return 0
}
netns_remove() {
	local ns
	netns_kill "$@"
	for ns in "$@"; do
		ip netns del "$ns" 2>/dev/null
	done
	return 0
}

# netns_teardown MON PEER: kills what runs in MON, deletes both namespaces.
netns_teardown() {
	ip netns pids "$1" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
	ip netns del "$1" 2>/dev/null || true
	ip netns del "$2" 2>/dev/null || true
}

# The dashboard checks: tmux on the suite's own server ($TMUX_SERVER), and
# screen_wait PATTERN, until pane "dash" shows an (extended) regex match.
tm() { tmux -u -L "$TMUX_SERVER" "$@"; }
screen_wait() {
	for _ in $(seq 100); do
		tm capture-pane -p -t dash | grep -Eq "$1" && return 0
		sleep 0.1
	done
	return 1
}

# alive PID: whether the process runs (a zombie does not: an orphaned
# helper waits for a PID 1 that may never reap it).
alive() {
	local state
	state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) && [ -n "$state" ] && [ "$state" != Z ]
}

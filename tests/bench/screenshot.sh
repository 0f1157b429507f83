#!/usr/bin/env bash
# tests/bench/screenshot.sh [OUT.svg] — the README's dashboard picture, from
# a real run (root): icmpmon --source nfqueue in a namespace, in tmux at
# 120x40, while the peer namespace pings (IPv4, IPv6, one lossy host via
# a dropped reply), probes closed UDP ports and floods briefly, and a
# process of the monitored host ("resolver") gets port-unreachable; then the
# pane, colours included, becomes an SVG.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/netns/lib.sh
. "$repo/tests/netns/lib.sh"
out=${1:-$repo/tui/dashboard.svg}
work=$(mktemp -d /tmp/icmpmon-shot.XXXXXX)
mon=mon
peer=peer
TMUX_SERVER=icmpmon-shot
cleanup() {
	tm kill-server 2>/dev/null || true
	netns_teardown "$mon" "$peer"
	rm -rf "$work"
}
trap cleanup EXIT

cd "$repo"
cargo build --release --locked -q
gcc -static -O2 -o "$work/vmhelper" tests/vm/helper.c
netns_pair "$mon" "$peer" ics0 ics1 10.97.0 fd97
ip -n "$peer" addr add 10.97.0.3/24 dev ics1
ip -n "$peer" addr add 10.97.0.4/24 dev ics1

tm new-session -d -s shot -x 120 -y 40 "ip netns exec $mon $repo/target/release/icmpmon --source nfqueue --flood-pps 200; sleep 60"
sleep 2
in_peer() { ip netns exec "$peer" "$@"; }
in_peer ping -q -c 60 -i 0.2 10.97.0.1 >/dev/null &
in_peer ping -q -c 60 -i 0.2 fd97::1 >/dev/null &
in_peer ping -q -c 60 -i 0.2 -I 10.97.0.3 10.97.0.1 >/dev/null &
# 10.97.0.4 is never answered: the monitor host drops its requests after
# the (raw-table) capture point.
ip netns exec "$mon" iptables -A INPUT -s 10.97.0.4 -p icmp -j DROP
in_peer ping -q -c 40 -i 0.3 -W 1 -I 10.97.0.4 10.97.0.1 >/dev/null &
for port in 33434 33435 33436; do
	in_peer "$work/vmhelper" udp 10.97.0.1 "$port"
	sleep 0.5
done
in_peer "$work/vmhelper" udp fd97::1 33437
# A process of the monitored host whose datagrams the peer refuses (no
# rate limit on its errors, so they show among the events): the
# port-unreachable errors name it (events, who got hurt).
in_peer sysctl -qw net.ipv4.icmp_ratelimit=0
ip netns exec "$mon" python3 -c "
import ctypes, socket, time
ctypes.CDLL(None).prctl(15, b'resolver', 0, 0, 0)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(('10.97.0.2', 53))
for _ in range(100):
    try:
        s.send(b'q')
    except OSError:
        pass
    time.sleep(0.1)
" &
in_peer timeout 1 ping -q -f 10.97.0.1 >/dev/null || true
# Mid-traffic, so the rates are live.
sleep 5
tm capture-pane -e -p -t shot > "$work/screen.ansi"
cargo run --release --locked -q --example ansi_svg < "$work/screen.ansi" > "$out"
wait
echo "screenshot: $out"

#!/usr/bin/env bash
# tests/netns/metrics.sh — the metrics endpoint checked by a real Prometheus
# (root, Debian's `prometheus` and `promtool`). Four namespaces: a pings
# through r to b (answers 20 ms late), c (drops 30 % of echo requests) and an
# unreachable network; r runs icmpmon as a metrics daemon and a Prometheus
# that scrapes it every second with dist/prometheus/rules.yml loaded. The
# answers of Prometheus's HTTP API are checked against ping's own counts and
# r's ICMP counters; then the endpoint is abused. Every check prints one
# "NETNS <name> PASS|FAIL <detail>" line; the last line counts them.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "tests/netns/metrics.sh: needs root (namespaces, capture)" >&2; exit 1; }
command -v prometheus >/dev/null && command -v promtool >/dev/null ||
	{ echo "tests/netns/metrics.sh: needs prometheus and promtool (apt-get install prometheus)" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/netns/lib.sh
. "$repo/tests/netns/lib.sh"
bin="$repo/target/debug/icmpmon"
abuse="$repo/tests/netns/http_abuse.py"
work=$(mktemp -d /tmp/icmpmon-metrics.XXXXXX)
a=icmpmon-m-a
r=icmpmon-m-r
b=icmpmon-m-b
c=icmpmon-m-c
port=9798
prom=127.0.0.1:9390

cleanup() {
	netns_remove $r $a $b $c
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

CHECK_KIND=NETNS
# shellcheck source=tests/checks.sh
. "$repo/tests/checks.sh"
quietly() { "$@" >>"$work/quiet.out" 2>&1; }
in_a() { ip netns exec "$a" "$@"; }
in_r() { ip netns exec "$r" "$@"; }

(cd "$repo" && cargo build --locked -q) || exit 1

# --- the topology: a (10.97.1.2) — r — b (10.97.2.2), c (10.97.3.2);
# r has no route to 10.97.9.0/24 but an unreachable one.
for ns in $a $r $b $c; do
	ip netns del "$ns" 2>/dev/null
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
done
ip link add ma0 netns "$a" type veth peer name mr0 netns "$r"
ip link add mb0 netns "$b" type veth peer name mr1 netns "$r"
ip link add mc0 netns "$c" type veth peer name mr2 netns "$r"
ip -n "$a" addr add 10.97.1.2/24 dev ma0
ip -n "$r" addr add 10.97.1.1/24 dev mr0
ip -n "$r" addr add 10.97.2.1/24 dev mr1
ip -n "$r" addr add 10.97.3.1/24 dev mr2
ip -n "$b" addr add 10.97.2.2/24 dev mb0
ip -n "$c" addr add 10.97.3.2/24 dev mc0
in_r sysctl -qw net.ipv4.ip_forward=1
for dev in "$a ma0" "$r mr0" "$r mr1" "$r mr2" "$b mb0" "$c mc0"; do
	set -- $dev
	ip -n "$1" link set "$2" up
done
ip -n "$a" route add default via 10.97.1.1
ip -n "$b" route add default via 10.97.2.1
ip -n "$c" route add default via 10.97.3.1
ip -n "$r" route add unreachable 10.97.9.0/24
# b answers 20 ms late (this kernel has no netem); c drops 30 % of requests.
ip netns exec "$b" sysctl -qw net.ipv4.icmp_echo_ignore_all=1
ip netns exec "$b" python3 "$repo/tests/netns/slow_echo.py" 20 &
disown
ip netns exec "$c" iptables -A INPUT -p icmp --icmp-type echo-request \
	-m statistic --mode random --probability 0.3 -j DROP
sleep 1

# --- icmpmon as a daemon in r, and a Prometheus scraping it every second.
# Its settings come from a --config file, as a service's would.
cat >"$work/icmpmon.toml" <<EOF
source = "packet"
headless = true
metrics-listen = "127.0.0.1:$port"

[peer-groups]
"10.97.2.0/24" = "slow"
"10.97.3.0/24" = "lossy"
EOF
ip netns exec "$r" "$bin" --config "$work/icmpmon.toml" \
	>"$work/icmpmon.out" 2>"$work/icmpmon.err" &
mon=$!
for _ in $(seq 100); do
	grep -q "capturing from" "$work/icmpmon.err" && break
	sleep 0.1
done
cp "$repo/dist/prometheus/rules.yml" "$work/rules.yml"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
scrape_configs:
  - job_name: icmpmon
    static_configs:
      - targets: ['127.0.0.1:$port']
EOF
check promtool-config "promtool check config" quietly promtool check config "$work/prometheus.yml"
check promtool-rules "promtool check rules dist/prometheus/rules.yml" \
	quietly promtool check rules "$repo/dist/prometheus/rules.yml"
ip netns exec "$r" prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
	--web.listen-address="$prom" >"$work/prometheus.log" 2>&1 &
disown

# query EXPR [TIME]: the first value of an instant query ("" if none);
# query_ok EXPR: whether Prometheus evaluates EXPR without error.
query() {
	in_r curl -sf --get "http://$prom/api/v1/query" --data-urlencode "query=$1" \
		${2:+--data-urlencode "time=$2"} |
		python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
query_ok() {
	in_r curl -sf --get "http://$prom/api/v1/query" --data-urlencode "query=$1" |
		python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["status"] != "success")'
}
for _ in $(seq 100); do
	[ "$(query 'up{job="icmpmon"}' 2>/dev/null)" = 1 ] && break
	sleep 0.2
done
check scraped "Prometheus scrapes icmpmon (up == 1)" test "$(query 'up{job="icmpmon"}')" = 1

# --- traffic: 300 pings to each of b and c, 20 a second, and 20 to the
# unreachable network.
# r's count of destination-unreachable messages sent.
unreachables_sent() {
	in_r awk '/^Icmp:/ && !h { h = 1; for (i = 1; i <= NF; i++) col[$i] = i; next }
		/^Icmp:/ { print $col["OutDestUnreachs"] }' /proc/net/snmp
}
unreach0=$(unreachables_sent)
started=$(date +%s)
ip netns exec "$a" ping -n -q -c 300 -i 0.05 -W 1 10.97.2.2 >"$work/ping-b" 2>&1 &
pb=$!
ip netns exec "$a" ping -n -q -c 300 -i 0.05 -W 1 10.97.3.2 >"$work/ping-c" 2>&1 &
pc=$!
in_a ping -n -q -c 20 -i 0.2 -W 1 10.97.9.9 >"$work/ping-u" 2>&1
wait $pb $pc
ended=$(date +%s)
unreach1=$(unreachables_sent)
# The last requests time out (2 s), then two scrapes and a rule evaluation.
sleep 5

received() { sed -n 's/.* \([0-9]*\) received.*/\1/p' "$1"; }
rb=$(received "$work/ping-b")
rc=$(received "$work/ping-c")
b_req=$(query 'icmpmon_echo_requests_total{responder="10.97.2.2"}')
check requests "b's requests in Prometheus: $b_req (ping sent 300)" test "$b_req" = 300
mid=$(((started + ended) / 2))
rate=$(query 'rate(icmpmon_echo_requests_total{responder="10.97.2.2"}[5s])' "$mid")
check request-rate "request rate to b mid-run: $rate/s (ping: 20/s)" \
	python3 -c "import sys; sys.exit(not 16 <= float('${rate:-0}') <= 24)"
grouped=$(query 'sum(icmpmon_echo_requests_total{responder_group="slow"})')
check peer-groups "requests to the group \"slow\" of --config's [peer-groups]: $grouped" test "$grouped" = 300
b_rep=$(query 'icmpmon_echo_replies_total{responder="10.97.2.2"}')
check replies "b's replies: $b_rep (ping received $rb)" test "$b_rep" = "$rb"
lost=$(query 'icmpmon_echo_lost_total{responder="10.97.3.2"} / (icmpmon_echo_lost_total{responder="10.97.3.2"} + icmpmon_echo_replies_total{responder="10.97.3.2"})')
ping_loss=$(python3 -c "print((300 - $rc) / 300)")
check loss-ratio "c's loss ratio: ${lost:-none} (ping: $ping_loss; dropped at 30 %)" \
	python3 -c "import sys; l = float('${lost:-nan}'); sys.exit(not (abs(l - $ping_loss) <= 0.02 and 0.2 <= l <= 0.4))"
rule=$(query 'icmpmon:echo_loss_ratio:rate5m{responder="10.97.3.2"}')
check loss-rule "recording rule icmpmon:echo_loss_ratio:rate5m for c: ${rule:-none}" \
	python3 -c "import sys; sys.exit(not abs(float('${rule:-nan}') - $ping_loss) <= 0.05)"
grule=$(query 'icmpmon:echo_loss_ratio_by_group:rate5m{responder_group="lossy"}')
check loss-group "loss towards the group \"lossy\" (icmpmon:echo_loss_ratio_by_group:rate5m): ${grule:-none}" \
	python3 -c "import sys; sys.exit(not abs(float('${grule:-nan}') - $ping_loss) <= 0.05)"
p50=$(query 'histogram_quantile(0.5, rate(icmpmon_echo_rtt_seconds_bucket{responder="10.97.2.2"}[30s]))' "$ended")
check rtt-quantile "b's median RTT: ${p50:-none} s (20 ms responder: in the 10–25 ms bucket)" \
	python3 -c "import sys; sys.exit(not 0.010 < float('${p50:-nan}') <= 0.025)"
p50c=$(query 'histogram_quantile(0.5, rate(icmpmon_echo_rtt_seconds_bucket{responder="10.97.3.2"}[30s]))' "$ended")
check rtt-fast "c's median RTT: ${p50c:-none} s (direct answers: under 2.5 ms)" \
	python3 -c "import sys; sys.exit(not 0 < float('${p50c:-nan}') <= 0.0025)"
unreach=$(query 'sum(icmpmon_errors_total{class="unreachable"})')
check unreachable "unreachables in Prometheus: ${unreach:-none}; r sent $((unreach1 - unreach0)) (OutDestUnreachs)" \
	test "${unreach:-x}" = "$((unreach1 - unreach0))" -a "$((unreach1 - unreach0))" -gt 0
lostcap=$(query 'sum(icmpmon_capture_lost_total)')
check capture-lost "capture losses: $lostcap" test "$lostcap" = 0
info=$(query 'icmpmon_build_info{source="packet"}')
check build-info "icmpmon_build_info{source=\"packet\"} = $info" test "$info" = 1
check daemon-quiet "--headless --metrics-listen writes nothing on stdout" test ! -s "$work/icmpmon.out"

# Every expression of the rules file and the Grafana dashboard runs.
python3 - "$repo" >"$work/exprs" <<'EOF'
import json, sys, yaml
repo = sys.argv[1]
for g in yaml.safe_load(open(f"{repo}/dist/prometheus/rules.yml"))["groups"]:
    for r in g["rules"]:
        print(" ".join(r["expr"].split()))
d = json.load(open(f"{repo}/dist/grafana/icmpmon.json"))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
exprs += [a["expr"] for a in d["annotations"]["list"] if "expr" in a]
exprs += [v["query"]["query"].replace("label_values(", "group by (instance) (").replace(", instance)", ")")
          for v in d["templating"]["list"]]
for e in exprs:
    print(" ".join(e.replace("$__rate_interval", "1m").replace("$instance", ".*").split()))
EOF
bad=0
total=0
while read -r e; do
	total=$((total + 1))
	query_ok "$e" || { bad=$((bad + 1)); echo "  does not run: $e"; }
done <"$work/exprs"
check promql "$((total - bad)) of $total PromQL expressions of rules.yml and the dashboard run" test "$bad" = 0 -a "$total" -gt 15
firing=$(query 'count(ALERTS{alertname="IcmpmonEchoLoss"})')
check alert-pending "IcmpmonEchoLoss is pending for c (30 % loss): ${firing:-none} series" test "${firing:-0}" -ge 1

# SCREENSHOT=FILE: the README's picture, Prometheus's graph page of the loss
# ratio rule, by headless Chromium (not a check).
if [ -n "${SCREENSHOT:-}" ]; then
	expr=$(python3 -c 'import urllib.parse; print(urllib.parse.quote("icmpmon:echo_loss_ratio:rate5m"))')
	in_r chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
		--window-size=1400,860 --virtual-time-budget=10000 --screenshot="$work/graph.png" \
		"http://$prom/graph?g0.expr=$expr&g0.tab=0&g0.range_input=1m&g0.stacked=0" >/dev/null 2>&1
	cp "$work/graph.png" "$SCREENSHOT" && echo "NETNS screenshot $SCREENSHOT"
fi

# --- the endpoint under bad input, while a pings b.
st() { in_r python3 "$abuse" 127.0.0.1 "$port" status "$1"; }
check http-404 "GET / → $(st /)" test "$(st /)" = 404
check http-405 "POST /metrics → $(st "b'POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n'")" \
	test "$(st "b'POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n'")" = 405
check http-400 "garbage → $(st "b'\x16\x03\x01\x00\xff garbage\r\n\r\n'")" \
	test "$(st "b'\x16\x03\x01\x00\xff garbage\r\n\r\n'")" = 400
big=$(in_r python3 "$abuse" 127.0.0.1 "$port" bigheader 100000)
check http-431 "a 100 KB header → $big" test "$big" = 431
req0=$(query 'icmpmon_echo_requests_total{responder="10.97.2.2"}')
ip netns exec "$a" ping -n -q -c 200 -i 0.02 10.97.2.2 >"$work/ping-b2" 2>&1 &
pb=$!
ip netns exec "$r" python3 "$abuse" 127.0.0.1 "$port" slowloris 400 >"$work/slowloris" 2>&1 &
slow=$!
for _ in $(seq 100); do
	grep -q open "$work/slowloris" && break
	sleep 0.1
done
sleep 2 # every slow client has had its second of grace
t0=$(date +%s%N)
code=$(in_r curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/metrics")
t1=$(date +%s%N)
ms=$(((t1 - t0) / 1000000))
check slowloris "a scrape beside 400 slow clients (still sending: $(kill -0 $slow 2>/dev/null && grep -c open "$work/slowloris")): $code in $ms ms" \
	test "$code" = 200 -a "$ms" -lt 2000 -a "$(grep -c open "$work/slowloris")" = 1
kill -0 $slow || ko slowloris-alive "the slow clients had stopped: $(cat "$work/slowloris")"
conc=$(in_r python3 "$abuse" 127.0.0.1 "$port" concurrent 1000)
check concurrent "1000 concurrent scrapes beside them: $conc" test "${conc%% *}" = ok=1000
kill $slow 2>/dev/null
wait $slow 2>/dev/null
wait $pb
rss=$(awk '/VmHWM/ { print $2 }' "/proc/$mon/status")
check memory "icmpmon's peak RSS through the abuse: $rss KiB (bound 65536)" test "$rss" -lt 65536
sleep 4
req1=$(query 'icmpmon_echo_requests_total{responder="10.97.2.2"}')
lostcap=$(query 'sum(icmpmon_capture_lost_total)')
check capture-unaffected "requests to b during the abuse: $((req1 - req0)) of 200, capture losses $lostcap" \
	test "$((req1 - req0))" = 200 -a "$lostcap" = 0
dropped=$(in_r curl -s "http://127.0.0.1:$port/metrics" | grep '^icmpmon_http_dropped_total{reason="full"}')
check http-evicted "slow clients closed to make room: ${dropped##* }" test "${dropped##* }" -gt 0

# --- Ctrl-C: exit 0, the port is free again.
kill -INT $mon
wait $mon
rc=$?
check sigint "SIGINT: exit $rc, port closed" test "$rc" = 0 -a -z "$(in_r ss -Hltn "sport = :$port")"

echo "NETNS metrics: $pass passed, $fail failed"
[ "$fail" = 0 ]

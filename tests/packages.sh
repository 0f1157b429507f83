#!/usr/bin/env bash
# tests/packages.sh — the Debian packages for real (root): builds them with
# dist/deb/build.sh, installs both with apt on this machine beside the
# newest Debian 6.1 kernel headers (DKMS must build and install the module
# for that kernel from the icmpmon-dkms postinst), checks the binary, the
# man page, the completions and the systemd unit (systemd-analyze verify
# and security), runs the installed binary the way the unit does (a user
# that is not root, CAP_NET_RAW only) in a namespace, then purges both and
# checks that nothing is left. Prints one "PKG <name> PASS|FAIL" line per
# check and a closing count.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "tests/packages.sh: needs root (dpkg, dkms)" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/.." && pwd)
vm="$repo/tests/vm"
work=$(mktemp -d /tmp/icmpmon-packages.XXXXXX)
ns=icmpmon-pkg
installed_headers=()
had_mok=$([ -e /var/lib/dkms/mok.key ] && echo 1)
CHECK_KIND=PKG
# shellcheck source=tests/checks.sh
. "$repo/tests/checks.sh"
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -y -q "$@"; }

cleanup() {
	ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	dpkg -s icmpmon-dkms >/dev/null 2>&1 && apt_get purge icmpmon-dkms >/dev/null 2>&1
	dpkg -s icmpmon >/dev/null 2>&1 && apt_get purge icmpmon >/dev/null 2>&1
	if [ ${#installed_headers[@]} -gt 0 ]; then
		apt_get purge "${installed_headers[@]}" >/dev/null 2>&1
	fi
	[ -n "$had_mok" ] || rm -f /var/lib/dkms/mok.key /var/lib/dkms/mok.pub
	rm -rf "$work"
}

for p in icmpmon icmpmon-dkms; do
	if dpkg -s "$p" >/dev/null 2>&1; then
		echo "tests/packages.sh: $p is installed here; the test would replace it: purge it first" >&2
		exit 1
	fi
done
trap cleanup EXIT

debs=$("$repo/dist/deb/build.sh" "$work/debs") || { echo "PKG build FAIL"; exit 1; }
deb=$(echo "$debs" | grep '/icmpmon_')
dkms_deb=$(echo "$debs" | grep '/icmpmon-dkms_')
version=$(dpkg-deb -f "$deb" Version)
ok build "$(basename "$deb") $(basename "$dkms_deb")"

# The headers of the newest 6.1 kernel (with those they depend on), as a
# user would have them; DKMS builds for every kernel with headers.
kver=$("$vm/fetch-kernel.sh" bookworm/6.1 "$vm/cache") || { ko headers "no 6.1 kernel found"; exit 1; }
for pkg in "linux-headers-$kver" $(apt-cache depends "linux-headers-$kver" |
	awk '/Depends: linux-(headers|kbuild)-/ { print $2 }'); do
	dpkg -s "$pkg" >/dev/null 2>&1 || installed_headers+=("$pkg")
done
apt_get install --no-install-recommends "linux-headers-$kver" >/dev/null 2>&1 ||
	{ ko headers "cannot install linux-headers-$kver"; exit 1; }

if apt_get install --no-install-recommends "$deb" "$dkms_deb" >"$work/install.log" 2>&1; then
	ok install "apt-get install both packages"
else
	ko install "$(tail -n 20 "$work/install.log")"
fi
v=$(icmpmon --version 2>&1)
check version "icmpmon --version: $(echo "$v" | head -1)" \
	grep -q "^icmpmon $version (commit [0-9a-f]" <<<"$v"
status=$(dkms status -m icmpmon -v "$version" -k "$kver" 2>&1)
check dkms "dkms status: $status" grep -q "installed" <<<"$status"
ko_file=$(find "/lib/modules/$kver/updates/dkms" -name 'icmpmon.ko*' 2>/dev/null | head -1)
check module "module built for $kver: ${ko_file:-none} ($(modinfo -F vermagic "$ko_file" 2>/dev/null | cut -d' ' -f1))" \
	test -n "$ko_file" -a "$(modinfo -F vermagic "$ko_file" 2>/dev/null | cut -d' ' -f1)" = "$kver"
check man "man page installed: $(man -w icmpmon 2>&1)" sh -c 'man -w 8 icmpmon >/dev/null && zcat "$(man -w 8 icmpmon)" | grep -q "^\.TH icmpmon 8"'
check completions "bash, zsh and fish completions" test -s /usr/share/bash-completion/completions/icmpmon \
	-a -s /usr/share/zsh/vendor-completions/_icmpmon -a -s /usr/share/fish/vendor_completions.d/icmpmon.fish
unit=/lib/systemd/system/icmpmon.service
socket_unit=/lib/systemd/system/icmpmon.socket
check unit-verify "systemd-analyze verify $unit $socket_unit: $(systemd-analyze verify "$unit" "$socket_unit" 2>&1 | head -3)" \
	systemd-analyze verify "$unit" "$socket_unit"
exposure=$(systemd-analyze security --offline=true "$unit" 2>/dev/null |
	sed -n 's/.*Overall exposure level for icmpmon.service: \([0-9.]*\).*/\1/p')
# 1.7: the unit's exposure before it gave attribution its capabilities.
check unit-security "systemd-analyze security exposure: ${exposure:-?} (at most 1.7)" \
	python3 -c "import sys; sys.exit(not float('${exposure:-9}') <= 1.7)"
check config "/etc/icmpmon/icmpmon.toml is a conffile" sh -c 'dpkg-query -W -f="\${Conffiles}" icmpmon | grep -q /etc/icmpmon/icmpmon.toml'

# The unit's command line, its capabilities and a user that is not root, in
# a namespace of its own, with /proc mounted as ProtectProc=invisible
# mounts it (other users' processes hidden) and the metrics socket passed
# as icmpmon.socket passes it (systemd-socket-activate starts the command
# at the first connection). A root process's flow, hurt by a
# port-unreachable, must still be named: attribution works as a service.
caps=$(sed -n 's/^AmbientCapabilities=//p' "$unit" | tr 'A-Z ' 'a-z\n' | sed 's/^cap_/+/' | paste -sd,)
listen=$(sed -n 's/^ListenStream=//p' "$socket_unit")
ip netns add "$ns"
ip -n "$ns" link set lo up
# Under strace: every system call icmpmon and its helpers make must be one
# the unit's SystemCallFilter= allows (checked below).
strace -f -qq -o "$work/service.strace" \
	ip netns exec "$ns" unshare --mount --propagation private sh -c '
	mount -t proc -o hidepid=invisible proc /proc && exec "$@"' sh \
	setpriv --reuid=65534 --regid=65534 --clear-groups \
	--inh-caps=-all,$caps --ambient-caps=-all,$caps --bounding-set=-all,$caps --no-new-privs \
	systemd-socket-activate -l "$listen" \
	$(sed -n 's/^ExecStart=//p' "$unit") >"$work/service.out" 2>"$work/service.err" &
svc=$!
# The first connection starts it (once the socket listens).
ip netns exec "$ns" curl -s -o /dev/null --retry-connrefused --retry 30 --retry-delay 1 \
	--max-time 40 "http://$listen/metrics"
for _ in $(seq 100); do
	grep -q "capturing from" "$work/service.err" && break
	sleep 0.1
done
ip netns exec "$ns" ping -c 3 -i 0.2 127.0.0.1 >/dev/null
ip netns exec "$ns" python3 -c "
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(('127.0.0.1', 9))
s.send(b'x')
time.sleep(1.5)"
n=$(ip netns exec "$ns" curl -s "http://$listen/metrics" |
	sed -n 's/^icmpmon_echo_requests_total{requester="127.0.0.1",responder="127.0.0.1"} //p')
# To icmpmon itself (strace -o holds fatal signals back): strace exits
# with its status.
kill -TERM "$(pgrep -P $svc -f /usr/bin/icmpmon)"
wait $svc
rc=$?
check service "the unit's command as nobody with the unit's capabilities ($caps), its metrics socket passed: ${n:-no} requests in /metrics, exit $rc" \
	test "${n:-0}" = 3 -a "$rc" = 0
check service-socket "icmpmon served the socket it was passed: $(grep 'metrics at' "$work/service.err")" \
	grep -q "metrics at http://$listen/metrics (the socket the service manager passed)" "$work/service.err"
check service-attribution "a root process's flow is named under hidepid: $(grep 'attribution:' "$work/service.err")" \
	grep -q "attribution: 1 messages asked about: 1 to a process" "$work/service.err"
check service-quiet "the service writes nothing on stdout" test ! -s "$work/service.out"
# The unit's syscall filter, groups expanded (systemd-analyze), against
# the calls of every process that ran /usr/bin/icmpmon (and its helpers).
outside=$(python3 - "$unit" "$work/service.strace" <<'PYEOF'
import re, subprocess, sys
unit, trace = sys.argv[1], sys.argv[2]
def expand(name, seen):
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines()[1:]:
        w = line.strip()
        if w and not w.startswith("#"):
            names |= expand(w, seen)
    return names
allowed, denied = set(), set()
for line in open(unit):
    if line.startswith("SystemCallFilter="):
        v = line.split("=", 1)[1].strip()
        deny = v.startswith("~")
        for w in v.lstrip("~").split():
            (denied if deny else allowed).update(expand(w, set()))
allowed -= denied
# Two passes: who ran icmpmon (from its exec on: the same pid ran the
# wrappers before) and whom they started, then their calls (a child's
# first calls can come before its parent's clone returns).
start, edges, calls = {}, [], []
for i, line in enumerate(open(trace)):
    m = re.match(r"(\d+)\s+(.*)", line)
    if not m:
        continue
    pid, rest = m.groups()
    rest = rest.strip()
    if re.match(r'execve\("(/usr/bin/icmpmon|/proc/self/exe)"', rest) and rest.endswith("= 0"):
        start.setdefault(pid, i)
    c = re.search(r"^(?:<\.\.\. )?(?:clone3?|fork|vfork)\b.*= (\d+)$", rest)
    if c:
        edges.append((pid, c.group(1), i))
    n = re.match(r"([a-z0-9_]+)\(", rest)
    if n:
        calls.append((pid, n.group(1), i))
grew = True
while grew:
    grew = False
    for parent, child, i in edges:
        # A child counts from its fork (its calls before an exec run
        # under the unit's filter too).
        if parent in start and i >= start[parent] and start.get(child) != 0:
            start[child] = 0
            grew = True
ours = set(start)
used = {name for pid, name, i in calls if pid in start and i >= start[pid]}
print(len(ours), len(used), " ".join(sorted(used - allowed)))
PYEOF
)
read -r traced ncalls missing <<<"$outside"
check unit-syscalls "the unit's SystemCallFilter= allows all ${ncalls:-?} system calls of icmpmon's ${traced:-?} processes and threads: ${missing:-none outside}" \
	sh -c "[ '${traced:-0}' -ge 3 ] && [ -z '$missing' ]"

apt_get purge icmpmon icmpmon-dkms >"$work/purge.log" 2>&1 || ko purge "$(tail -n 20 "$work/purge.log")"
left=$(ls -d /usr/bin/icmpmon /etc/icmpmon "$unit" /usr/src/icmpmon-* /var/lib/dkms/icmpmon \
	/lib/modules/*/updates/dkms/icmpmon.ko* /usr/share/man/man8/icmpmon.8.gz \
	/usr/share/doc/icmpmon /usr/share/doc/icmpmon-dkms 2>/dev/null)
pkgs=$(dpkg -l 'icmpmon*' 2>/dev/null | awk '/^[a-z][a-z] / && $1 != "un" { print $2 }')
check purge "purge leaves nothing: ${left:-no files}, ${pkgs:-no packages}" test -z "$left$pkgs"

echo "packages: $pass passed, $fail failed"
[ "$fail" = 0 ]

#!/usr/bin/env bash
# dist/deb/build.sh [OUTDIR] — builds the two Debian packages from this tree:
#   icmpmon_VERSION_ARCH.deb  the binary (release build), its man page and
#                             shell completions, the systemd unit, the example
#                             config (/etc/icmpmon/icmpmon.toml, a conffile),
#                             the Prometheus rules and the Grafana dashboard;
#   icmpmon-dkms_VERSION_all.deb  kmod-hook/ under /usr/src, built by DKMS
#                             for every installed kernel with headers.
# With dpkg-deb alone (no debhelper): cargo-deb cannot make the DKMS
# package, and one way for both is simpler to keep right.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "${1:-$repo/target/deb}")
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
dkms_version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$repo/kmod-hook/dkms.conf")
[ "$version" = "$dkms_version" ] || {
	echo "dist/deb/build.sh: Cargo.toml says $version, kmod-hook/dkms.conf $dkms_version" >&2
	exit 1
}
arch=$(dpkg --print-architecture)
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$repo" && cargo build --release --locked -q)
bin="$repo/target/release/icmpmon"

# --- icmpmon
p="$work/icmpmon"
install -D -m 0755 "$bin" "$p/usr/bin/icmpmon"
strip --strip-unneeded "$p/usr/bin/icmpmon"
mkdir -p "$p/usr/share/man/man8"
"$bin" man | gzip -9n >"$p/usr/share/man/man8/icmpmon.8.gz"
install -d "$p/usr/share/bash-completion/completions" "$p/usr/share/zsh/vendor-completions" \
	"$p/usr/share/fish/vendor_completions.d"
"$bin" completions bash >"$p/usr/share/bash-completion/completions/icmpmon"
"$bin" completions zsh >"$p/usr/share/zsh/vendor-completions/_icmpmon"
"$bin" completions fish >"$p/usr/share/fish/vendor_completions.d/icmpmon.fish"
install -D -m 0644 "$repo/dist/icmpmon.service" "$p/lib/systemd/system/icmpmon.service"
install -D -m 0644 "$repo/dist/icmpmon.socket" "$p/lib/systemd/system/icmpmon.socket"
install -D -m 0644 "$repo/dist/icmpmon.toml" "$p/etc/icmpmon/icmpmon.toml"
install -D -m 0644 "$repo/dist/prometheus/rules.yml" "$p/usr/share/doc/icmpmon/examples/prometheus-rules.yml"
install -D -m 0644 "$repo/dist/grafana/icmpmon.json" "$p/usr/share/doc/icmpmon/examples/grafana-icmpmon.json"
install -D -m 0644 "$repo/dist/deb/copyright" "$p/usr/share/doc/icmpmon/copyright"
install -d "$p/DEBIAN"
cat >"$p/DEBIAN/control" <<CONTROL
Package: icmpmon
Version: $version
Architecture: $arch
Maintainer: icmpmon developers <icmpmon@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$p" | cut -f1)
Depends: libc6 (>= 2.34), libgcc-s1
Suggests: icmpmon-dkms, prometheus
Section: net
Priority: optional
Description: ICMP and ICMPv6 monitor with a dashboard and Prometheus metrics
 icmpmon watches the ICMP and ICMPv6 a host really carries (its own kernel
 module, BPF netfilter programs with the kernel's drop reasons, AF_PACKET,
 NFLOG, NFQUEUE or capture files): echo RTT and loss per peer pair, errors
 tied to the flows they quote, anomaly flags. It shows
 a live dashboard, writes CSV or JSON lines, and serves OpenMetrics for
 Prometheus (the icmpmon service, disabled until enabled).
CONTROL
echo /etc/icmpmon/icmpmon.toml >"$p/DEBIAN/conffiles"
cat >"$p/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	# An upgrade: a running service moves to the new binary.
	if [ "$1" = configure ] && [ -n "$2" ]; then
		systemctl try-restart icmpmon.service || true
	fi
fi
SCRIPT
cat >"$p/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	systemctl stop icmpmon.service icmpmon.socket || true
	systemctl disable icmpmon.service icmpmon.socket || true
fi
SCRIPT
cat >"$p/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
	rm -rf /etc/icmpmon /var/log/icmpmon /var/log/private/icmpmon
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
SCRIPT
chmod 0755 "$p/DEBIAN/postinst" "$p/DEBIAN/prerm" "$p/DEBIAN/postrm"
dpkg-deb --root-owner-group -Zxz --build "$p" "$out/icmpmon_${version}_$arch.deb" >/dev/null

# --- icmpmon-dkms
d="$work/icmpmon-dkms"
src="$d/usr/src/icmpmon-$version"
install -d "$src/include/uapi"
install -m 0644 "$repo/kmod-hook/Kbuild" "$repo/kmod-hook/Makefile" "$repo/kmod-hook/dkms.conf" \
	"$repo/kmod-hook/icmpmon.c" "$src/"
install -m 0644 "$repo/kmod-hook/include/uapi/icmpmon.h" "$src/include/uapi/"
install -D -m 0644 "$repo/dist/deb/copyright" "$d/usr/share/doc/icmpmon-dkms/copyright"
install -d "$d/DEBIAN"
cat >"$d/DEBIAN/control" <<CONTROL
Package: icmpmon-dkms
Version: $version
Architecture: all
Maintainer: icmpmon developers <icmpmon@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$d" | cut -f1)
Depends: dkms (>= 2.1.0.0), build-essential
Recommends: linux-headers-amd64 | linux-headers-generic, icmpmon
Section: kernel
Priority: optional
Description: icmpmon's kernel module (DKMS source)
 A netfilter hook that hands every ICMP and ICMPv6 packet to icmpmon over
 generic netlink (icmpmon --source kmod), the cheapest of its sources. DKMS
 builds it for every installed kernel whose headers are installed, and again
 for each new one.
CONTROL
cat >"$d/DEBIAN/postinst" <<SCRIPT
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
	/usr/lib/dkms/common.postinst icmpmon $version "" "" "\$2"
fi
SCRIPT
cat >"$d/DEBIAN/prerm" <<SCRIPT
#!/bin/sh
set -e
if [ "\$1" = remove ] || [ "\$1" = upgrade ] || [ "\$1" = deconfigure ]; then
	if [ "\$(dkms status -m icmpmon -v $version)" ]; then
		dkms remove -m icmpmon -v $version --all
	fi
fi
SCRIPT
chmod 0755 "$d/DEBIAN/postinst" "$d/DEBIAN/prerm"
dpkg-deb --root-owner-group -Zxz --build "$d" "$out/icmpmon-dkms_${version}_all.deb" >/dev/null
echo "$out/icmpmon_${version}_$arch.deb"
echo "$out/icmpmon-dkms_${version}_all.deb"

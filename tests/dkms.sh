#!/usr/bin/env bash
# tests/dkms.sh — DKMS for real (root): `dkms add` kmod-hook/ and `dkms
# build` it against the newest Debian 6.1 and 6.12 kernel headers, installed
# on this machine as a user would (apt), then against the newest 7.x of
# trixie-backports inside the cached trixie chroot (its kbuild tools need
# trixie's userland). It works under its own version string, so a real
# icmpmon DKMS install is never touched, and removes all it added (the
# header packages too, unless they were there before). Prints one
# "DKMS <kernel> PASS|FAIL" line each and a closing count.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
vm="$repo/tests/vm"
cache="$vm/cache"
version="$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$repo/kmod-hook/dkms.conf")-dkmstest"
scratch=$(mktemp -d)
installed_headers=()
# DKMS makes a signing key pair on its first build; keep a user's, drop ours.
had_mok=$([ -e /var/lib/dkms/mok.key ] && echo 1)
cleanup() {
	rm -rf "$scratch"
	[ -n "$had_mok" ] || rm -f /var/lib/dkms/mok.key /var/lib/dkms/mok.pub
	if [ ${#installed_headers[@]} -gt 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "${installed_headers[@]}" >/dev/null 2>&1
	fi
}
trap cleanup EXIT
CHECK_KIND=DKMS
# shellcheck source=tests/checks.sh
. "$repo/tests/checks.sh"

# dkms_cycle ROOT KVER: add, build, check status, remove, under ROOT ("" is
# this machine, else a chroot).
dkms_cycle() {
	local root=$1 kver=$2 run=() log status
	[ -n "$root" ] && run=(chroot "$root")
	log=$(mktemp)
	rm -rf "$root/usr/src/icmpmon-$version"
	mkdir -p "$root/usr/src/icmpmon-$version"
	cp -r "$repo/kmod-hook/." "$root/usr/src/icmpmon-$version/"
	sed -i "s/^PACKAGE_VERSION=.*/PACKAGE_VERSION=\"$version\"/" "$root/usr/src/icmpmon-$version/dkms.conf"
	if "${run[@]}" dkms add "icmpmon/$version" >"$log" 2>&1 &&
		"${run[@]}" dkms build "icmpmon/$version" -k "$kver" >>"$log" 2>&1; then
		status=$("${run[@]}" dkms status "icmpmon/$version" -k "$kver" 2>/dev/null)
		if echo "$status" | grep -q "built"; then
			ok "$kver" "dkms build: $status"
		else
			ko "$kver" "dkms status says: $status"
		fi
	else
		ko "$kver" "$(tail -n 20 "$log")"
		find "$root/var/lib/dkms/icmpmon" -name make.log -exec tail -n 20 {} \; 2>/dev/null
	fi
	"${run[@]}" dkms remove "icmpmon/$version" --all >/dev/null 2>&1
	rm -rf "$root/usr/src/icmpmon-$version" "$root/var/lib/dkms/icmpmon/$version"
	rmdir "$root/var/lib/dkms/icmpmon" 2>/dev/null
	rm -f "$log"
}

for spec in bookworm/6.1 bookworm/6.12; do
	kver=$("$vm/fetch-kernel.sh" "$spec" "$cache") || { ko "$spec" "no kernel found"; continue; }
	# The headers and the common headers and kbuild they depend on.
	for pkg in "linux-headers-$kver" $(apt-cache depends "linux-headers-$kver" |
		awk '/Depends: linux-(headers|kbuild)-/ { print $2 }'); do
		dpkg -s "$pkg" >/dev/null 2>&1 || installed_headers+=("$pkg")
	done
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"linux-headers-$kver" >/dev/null 2>&1; then
		ko "$kver" "cannot install linux-headers-$kver"
		continue
	fi
	dkms_cycle "" "$kver"
done

# 7.x: DKMS inside the trixie chroot that builds the VM's modules.
kver=$("$vm/fetch-kernel.sh" trixie-backports/7 "$cache") || kver=
if [ -n "$kver" ]; then
	# Builds once (and installs the headers into the chroot), with W=1.
	if "$vm/build-module.sh" "$kver" "$cache" "$repo/kmod-hook" "$scratch/build" W=1 KVER="$kver" >/dev/null; then
		root="$cache/chroot/trixie"
		if [ ! -x "$root/usr/sbin/dkms" ]; then
			mount -t proc proc "$root/proc"
			chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dkms >/dev/null 2>&1
			umount "$root/proc"
		fi
		mount -t proc proc "$root/proc"
		dkms_cycle "$root" "$kver"
		umount "$root/proc"
	else
		ko "$kver" "the module does not build in the chroot"
	fi
else
	ko trixie-backports/7 "no kernel found"
fi

echo "dkms: $pass passed, $fail failed"
[ "$fail" = 0 ]

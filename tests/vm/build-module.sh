#!/usr/bin/env bash
# build-module.sh RELEASE CACHE_DIR SRC_DIR OUT_DIR [MAKE ARGS...]
#
# Builds the out-of-tree module in SRC_DIR against the headers of kernel
# RELEASE (fetched by fetch-kernel.sh into CACHE_DIR) and leaves the tree,
# with its .ko files and build.log, in OUT_DIR. Fails if the build fails.
# MAKE ARGS go to SRC_DIR's Makefile, with INSTALL_MOD_PATH set to
# OUT_DIR/staging: `install` there runs modules_install and depmod.
#
# bookworm kernels build on this host: their header packages are unpacked
# under CACHE_DIR/headers/<release> and made usable where they lie. Newer
# kernels' kbuild tools and compilers need their own userland, so they build
# in a debootstrap chroot (CACHE_DIR/chroot/trixie for trixie and
# trixie-backports, CACHE_DIR/chroot/sid for sid) with the headers installed
# by apt; the chroots are cached. Nothing is bind-mounted into them but
# /proc, and only while apt or make runs.
set -euo pipefail

release=${1:?usage: build-module.sh RELEASE CACHE_DIR SRC_DIR OUT_DIR [MAKE ARGS...]}
cache=$(cd "${2:?}" && pwd)
src=$(cd "${3:?}" && pwd)
out=${4:?}
shift 4
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/apt.sh
. "$here/apt.sh"
suite=$(cat "$cache/kernels/$release/suite")

rm -rf "$out"
mkdir -p "$out"
cp -r "$src/." "$out/"

bookworm_headers() {
	local dir="$cache/headers/$release" root deps
	root="$dir/root"
	# The fixed-up tree names its own absolute path: redo it if moved.
	if [ "$(cat "$dir/.ready" 2>/dev/null)" != "$root" ]; then
		rm -rf "$dir"
		mkdir -p "$dir/debs" "$root"
		# The header package's own dependencies name the common headers and kbuild.
		deps=$(apt-cache depends "linux-headers-$release" | awk '/Depends: linux-(headers|kbuild)-/ {print $2}')
		(cd "$dir/debs" && apt-get download -q -o APT::Sandbox::User=root "linux-headers-$release" $deps >&2)
		for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
		rm -rf "$dir/debs"
		# Absolute symlinks (build -> /usr/src/..., source -> ...) into the tree.
		find "$root" -type l -lname '/*' | while read -r link; do
			ln -sfn "$root$(readlink "$link")" "$link"
		done
		# linux-headers-<release>/Makefile includes the common tree by absolute path.
		sed -i "s|^include /usr/src/|include $root/usr/src/|" "$root/usr/src/linux-headers-$release/Makefile"
		echo "$root" >"$dir/.ready"
	fi
	echo "$root/usr/src/linux-headers-$release"
}

# chroot_ready NAME: a minimal Debian NAME (trixie or sid) under
# CACHE_DIR/chroot/NAME with build tools; prints its path.
chroot_ready() {
	local name=$1 dir="$cache/chroot/$1"
	if [ ! -f "$dir/.ready" ]; then
		chroot_remove "$dir"
		mkdir -p "$dir"
		debootstrap --variant=minbase --include=make,gcc,libc6-dev,ca-certificates \
			"$name" "$dir" http://deb.debian.org/debian >&2
		echo 'Acquire::Check-Valid-Until "false";' >"$dir/etc/apt/apt.conf.d/99icmpmon"
		if [ "$name" = trixie ]; then
			echo "deb http://deb.debian.org/debian trixie-backports main" \
				>"$dir/etc/apt/sources.list.d/backports.list"
		fi
		touch "$dir/.ready"
	fi
	echo "$dir"
}

# chroot_remove DIR: unmount anything left inside, then delete without
# crossing into another file system (a bind-mounted /dev would take the
# host's device nodes with it).
chroot_remove() {
	local dir=$1 m
	[ -d "$dir" ] || return 0
	for m in $(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
		umount -l "$m"
	done
	rm -rf --one-file-system "$dir"
}

# in_chroot DIR CMD...: runs CMD inside DIR with /proc mounted meanwhile.
in_chroot() {
	local dir=$1 rc=0
	shift
	mount -t proc proc "$dir/proc"
	chroot "$dir" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@" || rc=$?
	umount "$dir/proc"
	return $rc
}

case "$suite" in
bookworm)
	kdir=$(bookworm_headers)
	make -C "$out" KDIR="$kdir" INSTALL_MOD_PATH="$out/staging" "$@" >"$out/build.log" 2>&1 ||
		{ cat "$out/build.log" >&2; exit 1; }
	;;
*)
	case "$suite" in sid) name=sid ;; *) name=trixie ;; esac
	dir=$(chroot_ready "$name")
	if [ ! -d "$dir/usr/src/linux-headers-$release" ] || [ ! -x "$dir/usr/bin/xz" ] ||
		! chroot "$dir" sh -c 'command -v depmod' >/dev/null; then
		in_chroot "$dir" apt-get update -q >&2
		in_chroot "$dir" apt-get install -y -q --no-install-recommends "linux-headers-$release" kmod xz-utils >&2
	fi
	work="$dir/build/$release"
	rm -rf "$work"
	mkdir -p "$work"
	cp -r "$src/." "$work/"
	rc=0
	in_chroot "$dir" make -C "/build/$release" KDIR="/usr/src/linux-headers-$release" \
		INSTALL_MOD_PATH="/build/$release/staging" "$@" >"$out/build.log" 2>&1 || rc=$?
	cp -r "$work/." "$out/"
	rm -rf "$work"
	if [ $rc != 0 ]; then cat "$out/build.log" >&2; exit 1; fi
	;;
esac

#!/usr/bin/env bash
# fetch-kernel.sh SERIES CACHE_DIR
#
# Finds the newest Debian bookworm kernel of SERIES (6.1 or 6.12), downloads
# its unsigned image and its header packages (headers, common headers,
# kbuild) into CACHE_DIR/<release>/, unpacks them there and makes the header
# tree usable where it lies (Debian's packages point at /usr/src and
# /usr/lib with absolute paths). Prints the kernel release on stdout.
#
# The ABI number in the package names changes over time, so it is looked up
# in the apt lists, never written down here. Needs 'apt-get update' first.
set -euo pipefail

series=${1:?usage: fetch-kernel.sh 6.1|6.12 CACHE_DIR}
cache=${2:?usage: fetch-kernel.sh 6.1|6.12 CACHE_DIR}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

case "$series" in
6.1) pattern='^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' ;;
6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' ;;
*) echo "fetch-kernel.sh: unknown series '$series' (6.1 or 6.12)" >&2; exit 2 ;;
esac

image_pkg=$(apt-cache search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -n 1)
if [ -z "$image_pkg" ]; then
	echo "fetch-kernel.sh: no package matches $pattern (did 'apt-get update' run?)" >&2
	exit 1
fi
release=${image_pkg#linux-image-}
release=${release%-unsigned}

dir="$cache/$release"
root="$dir/root"
if [ -f "$dir/.ready" ]; then
	echo "$release"
	exit 0
fi

rm -rf "$dir"
mkdir -p "$dir/debs" "$root"
headers_pkg="linux-headers-$release"
# The header package's own dependencies name the common headers and kbuild.
deps=$(apt-cache depends "$headers_pkg" | awk '/Depends: linux-(headers|kbuild)-/ {print $2}')
(cd "$dir/debs" && apt-get download -q -o APT::Sandbox::User=root "$image_pkg" "$headers_pkg" $deps >&2)
for deb in "$dir"/debs/*.deb; do
	dpkg-deb -x "$deb" "$root"
done

# Absolute symlinks (build -> /usr/src/..., source -> ...) into the tree.
find "$root" -type l -lname '/*' | while read -r link; do
	target=$(readlink "$link")
	ln -sfn "$root$target" "$link"
done
# linux-headers-<release>/Makefile includes the common tree by absolute path.
kdir="$root/usr/src/linux-headers-$release"
sed -i "s|^include /usr/src/|include $root/usr/src/|" "$kdir/Makefile"

# Modules ship xz-compressed on newer kernels; busybox insmod wants them plain.
find "$root/lib/modules" -name '*.ko.xz' -exec xz -d -f {} +

touch "$dir/.ready"
echo "$release"

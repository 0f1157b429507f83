#!/usr/bin/env bash
# fetch-kernel.sh SPEC CACHE_DIR
#
# SPEC is SUITE/SERIES[/FLAVOUR]: bookworm/6.1, bookworm/6.12,
# trixie-backports/7, sid/7, bookworm/6.1/rt, trixie-backports/7/rt, ...
# Finds the newest Debian kernel of that series in that suite (the version is
# looked up in the apt lists at run time, never written down here), downloads
# the kernel image and its modules into CACHE_DIR/kernels/<release>/ and
# unpacks them there:
#   vmlinuz           the kernel
#   root/             the packages' files (lib/modules/<release>/...)
#   suite             the suite, for build-module.sh
# Prints the kernel release on stdout.
#
# bookworm uses the host's apt lists (run 'apt-get update' first). Other
# suites get a private sources list and lists directory under
# CACHE_DIR/apt/<suite>/, so the host's apt configuration is never touched.
# From 7.x Debian's linux-image-* is a stub: the kernel is in
# linux-binary-<release>, the modules in linux-modules-<release>.
set -euo pipefail

spec=${1:?usage: fetch-kernel.sh SUITE/SERIES[/FLAVOUR] CACHE_DIR}
cache=${2:?usage: fetch-kernel.sh SUITE/SERIES[/FLAVOUR] CACHE_DIR}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/apt.sh
. "$here/apt.sh"

IFS=/ read -r suite series flavour <<<"$spec"
flavour=${flavour:+$flavour-}amd64
esc=${series//./\\.}

case "$suite" in
bookworm)
	apt_opts=()
	case "$series" in
	6.1) image_re="^linux-image-(6\\.1\\.0-[0-9]+-$flavour)-unsigned\$" ;;
	*) image_re="^linux-image-($esc(\\.[0-9]+)+\\+deb12-$flavour)-unsigned\$" ;;
	esac
	;;
trixie | trixie-backports | sid)
	apt_suite_lists "$cache" "$suite"
	apt_opts=("${APT_OPTS[@]}")
	image_re="^linux-binary-($esc(\\.[0-9]+)+\\+deb[0-9]+-$flavour)\$"
	;;
*)
	echo "fetch-kernel.sh: unknown suite '$suite' (bookworm, trixie, trixie-backports, sid)" >&2
	exit 2
	;;
esac

# The newest release of the series that this suite itself carries.
release=$(apt-cache "${apt_opts[@]}" search --names-only "$image_re" | awk '{print $1}' |
	sed -E "s/$image_re/\\1/" | sort -V | tail -n 1)
if [ -z "$release" ]; then
	echo "fetch-kernel.sh: no package in $suite matches $image_re" >&2
	exit 1
fi

dir="$cache/kernels/$release"
if [ -f "$dir/.ready" ]; then
	echo "$release"
	exit 0
fi
rm -rf "$dir"
mkdir -p "$dir/debs" "$dir/root"
case "$suite" in
bookworm) pkgs=("linux-image-$release-unsigned") ;;
*) pkgs=("linux-binary-$release" "linux-modules-$release") ;;
esac
(cd "$dir/debs" && apt-get "${apt_opts[@]}" download -q -o APT::Sandbox::User=root "${pkgs[@]}" >&2)
for deb in "$dir"/debs/*.deb; do
	dpkg-deb -x "$deb" "$dir/root"
done
rm -rf "$dir/debs"
vmlinuz=$(find "$dir/root" -name "vmlinuz*" -type f | head -n 1)
if [ -z "$vmlinuz" ]; then
	echo "fetch-kernel.sh: no vmlinuz in the $release packages" >&2
	exit 1
fi
mv "$vmlinuz" "$dir/vmlinuz"
# /lib/modules/<release> is in root/lib or root/usr/lib, by package age.
modules=$(find "$dir/root" -maxdepth 4 -type d -path "*/lib/modules/$release" | head -n 1)
ln -sfn "${modules#"$dir"/}" "$dir/modules"
echo "$suite" >"$dir/suite"
touch "$dir/.ready"
echo "$release"

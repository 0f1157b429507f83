#!/usr/bin/env bash
# tests/vm/run.sh — boots Debian's kernels in QEMU with icmpmon.ko and a
# static icmpmon, runs tests/vm/scenarios.sh in each and fails on any failed
# scenario or kernel Oops/WARNING/BUG.
#
# The matrix is a list of SUITE/SERIES[/FLAVOUR] specs (fetch-kernel.sh);
# the newest kernel of each is found at run time:
#   ICMPMON_VM_KERNELS="bookworm/6.1 bookworm/6.12 sid/7 trixie-backports/7 trixie-backports/7/rt"
#   ICMPMON_VM_STRESS=60      seconds of the stress scenario (0: none); it
#                             runs on one kernel per run, rotating by day
#   ICMPMON_VM_STRESS_ON=ALL  or a release: where the stress runs instead
#   ICMPMON_VM_BENCH=1        the ping -f benchmark, on the first kernel
#   ICMPMON_VM_TIMEOUT=900    seconds one VM may run
#
# Needs: qemu-system-x86, busybox-static, cpio, gcc, make, kmod, debootstrap,
# apt lists, and tcpdump + iputils-ping for the benchmark.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
vm="$repo/tests/vm"
cache="$vm/cache"
out="$vm/out"
kernels=${ICMPMON_VM_KERNELS:-"bookworm/6.1 bookworm/6.12 sid/7 trixie-backports/7 trixie-backports/7/rt"}
stress_s=${ICMPMON_VM_STRESS:-60}
bench=${ICMPMON_VM_BENCH:-1}
timeout_s=${ICMPMON_VM_TIMEOUT:-900}
target=x86_64-unknown-linux-gnu
mkdir -p "$cache" "$out"

log() { echo "vm: $*" >&2; }

log "building a static icmpmon"
(cd "$repo" && CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
	cargo build --release --locked --target "$target" -q)
icmpmon_bin="$repo/target/$target/release/icmpmon"
gcc -static -O2 -Wall -Wextra -Werror -o "$out/vmhelper" "$vm/helper.c"

# The kernels first: every release is known before any VM boots.
releases=()
for spec in $kernels; do
	releases+=("$("$vm/fetch-kernel.sh" "$spec" "$cache")")
done
n=${#releases[@]}
stress_on=${ICMPMON_VM_STRESS_ON:-${releases[$((10#$(date +%j) % n))]}}
log "matrix: ${releases[*]}; stress ${stress_s}s on $stress_on"

# copy_with_libs ROOT BIN...: a dynamically linked program and its libraries.
copy_with_libs() {
	local root=$1 bin lib
	shift
	for bin in "$@"; do
		mkdir -p "$root$(dirname "$bin")"
		cp -L "$bin" "$root$bin"
		for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
			mkdir -p "$root$(dirname "$lib")"
			cp -L "$lib" "$root$lib"
		done
	done
}

# Software emulation: the same on every machine (nested KVM, where a
# /dev/kvm exists at all, rejects some of -cpu max's MSRs). One host thread
# for both vCPUs: multi-threaded TCG can run a stale copy of kernel text
# that text_poke_bp() just patched (seen as "Oops: int3" in ip_rcv while
# the stress toggles netfilter's static keys), which real CPUs never do.
accel=tcg,thread=single

failed=0
summary=()
total_pass=0
total_fail=0
first=1
for release in "${releases[@]}"; do
	kdir="$cache/kernels/$release"
	work="$out/$release"
	rm -rf "$work"
	mkdir -p "$work"

	log "$release: building icmpmon.ko with W=1, installing it with make install"
	"$vm/build-module.sh" "$release" "$cache" "$repo/kmod-hook" "$work/kmod-hook" W=1 \
		KVER="$release" all install
	# Compiler diagnostics only: modules_install's signing step complains
	# of the missing Debian key (external modules are installed unsigned).
	if grep -E ': (warning|error):' "$work/kmod-hook/build.log"; then
		log "$release: the module build printed warnings"
		exit 1
	fi
	# A module as a later version would send it: longer record headers.
	"$vm/build-module.sh" "$release" "$cache" "$repo/kmod-hook" "$work/kmod-hdrtest" \
		KCFLAGS=-DICMPMON_TEST_HDR_EXTRA=16

	log "$release: building the initramfs"
	initrd="$work/initrd"
	moddir="$initrd/lib/modules/$release"
	mkdir -p "$initrd"/{bin,usr/bin,proc,sys,dev,tmp} "$moddir"
	cp /bin/busybox "$initrd/bin/busybox"
	cp "$icmpmon_bin" "$initrd/usr/bin/icmpmon"
	strip "$initrd/usr/bin/icmpmon"
	cp "$out/vmhelper" "$initrd/usr/bin/vmhelper"
	cp "$vm/init.sh" "$initrd/init"
	cp "$vm/scenarios.sh" "$initrd/scenarios.sh"
	chmod +x "$initrd/init"
	# The defrag modules from the kernel's package, icmpmon.ko as `make
	# install` put it, and depmod's index: the VM loads it with modprobe.
	for m in nf_defrag_ipv4 nf_defrag_ipv6; do
		ko=$(find -L "$kdir/modules" -name "$m.ko*" | head -n 1)
		if [ -z "$ko" ]; then log "$release: $m.ko not found"; exit 1; fi
		dest="$moddir/${ko#"$kdir/modules/"}"
		mkdir -p "$(dirname "$dest")"
		cp "$ko" "$dest"
	done
	installed=$(find "$work/kmod-hook/staging/lib/modules/$release" -name 'icmpmon.ko*' | head -n 1)
	if [ -z "$installed" ]; then log "$release: make install put no icmpmon.ko in place"; exit 1; fi
	mkdir -p "$moddir/updates"
	cp "$installed" "$moddir/updates/"
	# busybox modprobe reads plain .ko files only.
	find "$moddir" -name '*.ko.xz' -exec xz -d -f {} +
	cp "$work/kmod-hdrtest/icmpmon.ko" "$initrd/lib/icmpmon-hdrtest.ko"
	depmod -b "$initrd" "$release"
	if [ "$first" = 1 ] && [ "$bench" = 1 ]; then
		# The benchmark's peers, with their libraries.
		copy_with_libs "$initrd" /usr/bin/ping /usr/bin/tcpdump
		echo bench >"$initrd/bench"
	fi
	if [ "$stress_on" = ALL ] || [ "$stress_on" = "$release" ]; then
		echo "$stress_s" >"$initrd/stress"
	fi
	(cd "$initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

	log "$release: booting (accel $accel)"
	console="$work/console.log"
	set +e
	# slub_debug=P poisons freed memory: a use after free shows as 0x6b.
	timeout "$timeout_s" qemu-system-x86_64 -machine q35 -accel "$accel" -cpu max -smp 2 -m 1024 \
		-kernel "$kdir/vmlinuz" -initrd "$work/initrd.gz" \
		-append "console=ttyS0 panic=-1 oops=panic loglevel=5 slub_debug=P" \
		-nographic -no-reboot -nic none </dev/null >"$console" 2>&1
	qemu_rc=$?
	set -e
	tr -d '\r' <"$console" >"$console.txt"

	grep -E '^(SCENARIO|BENCH|  badmsg)' "$console.txt" | sed "s/^/[$release] /" || true
	bad=0
	if ! grep -q '^VM-DONE' "$console.txt"; then
		log "$release: the VM did not finish (qemu exit $qemu_rc); console tail:"
		tail -n 60 "$console.txt" >&2
		bad=1
	fi
	if grep -q '^SCENARIO .* FAIL' "$console.txt"; then bad=1; fi
	# The script's own last line: it ran to its end.
	if ! grep -q '^SCENARIOS-FAILED 0$' "$console.txt"; then
		log "$release: scenarios.sh did not run to its end cleanly"
		bad=1
	fi
	# Kernel messages only: the scenario lines may name these words.
	if grep -v -E '^(SCENARIO|BENCH|  badmsg)' "$console.txt" |
		grep -E 'Oops|WARNING:|BUG[: ]|Call Trace|Poison overwritten|Kernel panic'; then
		log "$release: the kernel complained on the console"
		bad=1
	fi
	passed=$(grep -c '^SCENARIO .* PASS' "$console.txt" || true)
	nfail=$(grep -c '^SCENARIO .* FAIL' "$console.txt" || true)
	if [ "$bad" = 1 ] && [ "$nfail" = 0 ]; then nfail=1; fi
	total_pass=$((total_pass + passed))
	total_fail=$((total_fail + nfail))
	if [ "$bad" = 0 ]; then
		summary+=("$release: $passed scenarios passed")
	else
		summary+=("$release: FAILED (see $console.txt)")
		failed=1
	fi
	first=0
done

printf 'vm: %s\n' "${summary[@]}"
# The closing line CI reads: scenarios over all kernels.
echo "vm: $total_pass passed, $total_fail failed"
exit $failed

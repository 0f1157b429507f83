#!/usr/bin/env bash
# tests/vm/run.sh — boots Debian's newest 6.1 and 6.12 kernels in QEMU with
# icmpmon.ko and a static icmpmon, runs tests/vm/scenarios.sh in each and
# fails on any failed scenario or kernel Oops/WARNING/BUG.
#
#   ICMPMON_VM_KERNELS="6.1 6.12"  which series to boot (default both)
#   ICMPMON_VM_TIMEOUT=900         seconds one VM may run
#
# Needs: qemu-system-x86, busybox-static, cpio, gcc, make, dwarves, apt lists.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
vm="$repo/tests/vm"
cache="$vm/cache"
out="$vm/out"
kernels=${ICMPMON_VM_KERNELS:-"6.1 6.12"}
timeout_s=${ICMPMON_VM_TIMEOUT:-900}
target=x86_64-unknown-linux-gnu
mkdir -p "$cache" "$out"

log() { echo "vm: $*" >&2; }

log "building a static icmpmon"
(cd "$repo" && CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
	cargo build --release --locked --target "$target" -q)
icmpmon_bin="$repo/target/$target/release/icmpmon"
gcc -static -O2 -Wall -Wextra -Werror -o "$out/vmhelper" "$vm/helper.c"

# Software emulation: the same on every machine (nested KVM, where a
# /dev/kvm exists at all, rejects some of -cpu max's MSRs).
accel=tcg

failed=0
summary=()
total_pass=0
total_fail=0
for series in $kernels; do
	release=$("$vm/fetch-kernel.sh" "$series" "$cache")
	root="$cache/$release/root"
	kdir="$root/usr/src/linux-headers-$release"
	work="$out/$release"
	rm -rf "$work"
	mkdir -p "$work"

	log "$release: building icmpmon.ko with W=1"
	cp -r "$repo/kmod-hook" "$work/kmod-hook"
	make -C "$work/kmod-hook" KDIR="$kdir" W=1 >"$work/build.log" 2>&1 || {
		cat "$work/build.log"
		log "$release: module build failed"
		exit 1
	}
	if grep -E 'warning:|error:' "$work/build.log"; then
		log "$release: the module build printed warnings"
		exit 1
	fi

	log "$release: building the initramfs"
	initrd="$work/initrd"
	mkdir -p "$initrd"/{bin,usr/bin,lib/modules,proc,sys,dev,tmp}
	cp /bin/busybox "$initrd/bin/busybox"
	cp "$icmpmon_bin" "$initrd/usr/bin/icmpmon"
	strip "$initrd/usr/bin/icmpmon"
	cp "$out/vmhelper" "$initrd/usr/bin/vmhelper"
	cp "$vm/init.sh" "$initrd/init"
	cp "$vm/scenarios.sh" "$initrd/scenarios.sh"
	chmod +x "$initrd/init"
	: >"$initrd/lib/modules/load-order"
	for m in nf_defrag_ipv4 nf_defrag_ipv6; do
		ko=$(find "$root/lib/modules/$release" -name "$m.ko" | head -n 1)
		if [ -z "$ko" ]; then log "$release: $m.ko not found"; exit 1; fi
		cp "$ko" "$initrd/lib/modules/"
		echo "$m.ko" >>"$initrd/lib/modules/load-order"
	done
	cp "$work/kmod-hook/icmpmon.ko" "$initrd/lib/modules/"
	echo icmpmon.ko >>"$initrd/lib/modules/load-order"
	(cd "$initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

	log "$release: booting (accel $accel)"
	console="$work/console.log"
	set +e
	timeout "$timeout_s" qemu-system-x86_64 -machine q35,accel=$accel -cpu max -smp 2 -m 1024 \
		-kernel "$root/boot/vmlinuz-$release" -initrd "$work/initrd.gz" \
		-append "console=ttyS0 panic=-1 oops=panic loglevel=4" \
		-nographic -no-reboot -nic none </dev/null >"$console" 2>&1
	qemu_rc=$?
	set -e
	tr -d '\r' <"$console" >"$console.txt"

	grep -E '^(SCENARIO|  badmsg)' "$console.txt" | sed "s/^/[$release] /" || true
	bad=0
	if ! grep -q '^VM-DONE' "$console.txt"; then
		log "$release: the VM did not finish (qemu exit $qemu_rc); console tail:"
		tail -n 60 "$console.txt" >&2
		bad=1
	fi
	if grep -q '^SCENARIO .* FAIL' "$console.txt"; then bad=1; fi
	# Kernel messages only: the scenario lines may name these words.
	if grep -v -E '^(SCENARIO|  badmsg)' "$console.txt" | grep -E 'Oops|WARNING:|BUG:|Kernel panic'; then
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
done

printf 'vm: %s\n' "${summary[@]}"
# The closing line CI reads: scenarios over all kernels.
echo "vm: $total_pass passed, $total_fail failed"
exit $failed

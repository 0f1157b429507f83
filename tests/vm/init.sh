#!/bin/busybox sh
# /init of the test initramfs: mount, load modules, run the scenarios,
# power off. Everything is read back from the serial console.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Pseudo-terminals, for the dashboard scenario (vmhelper pty).
mkdir -p /dev/pts
mount -t devpts -o ptmxmode=0666 devpts /dev/pts
mount -t tmpfs tmpfs /tmp
ip link set lo up

echo "VM-KERNEL $(uname -r)"
for m in $(cat /lib/modules/load-order); do
	insmod "/lib/modules/$m" || echo "SCENARIO insmod-$m FAIL"
done
sh /scenarios.sh
echo "VM-DONE"
poweroff -f

#!/bin/busybox sh
# /init of the test initramfs: mount, load the module the way users do
# (modprobe, which loads nf_defrag_ipv4/ipv6 first from depmod's index),
# run the scenarios, power off. Everything is read back from the serial
# console.
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
# tcpdump (benchmark) looks its user up.
mkdir -p /etc
echo 'root:x:0:0:root:/root:/bin/sh' >/etc/passwd
echo 'root:x:0:' >/etc/group

echo "VM-KERNEL $(uname -r)"
modprobe icmpmon
echo "VM-MODPROBE rc=$? modules: $(awk '{ printf "%s ", $1 }' /proc/modules)"
sh /scenarios.sh
echo "VM-DONE scenarios.sh exit $?"
poweroff -f

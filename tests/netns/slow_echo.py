#!/usr/bin/env python3
"""Answers ICMP and ICMPv6 echo requests after DELAY_MS (the namespace's own
echo replies must be off: net.ipv4.icmp_echo_ignore_all and
net.ipv6.icmp.echo_ignore_all), so that RTTs are long enough to compare
(this kernel has no netem). Runs until killed."""
import select, socket, struct, sys, threading, time

delay = float(sys.argv[1]) / 1000


def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF


v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)


def later(sock, data, addr):
    time.sleep(delay)
    sock.sendto(data, addr)


while True:
    for s in select.select([v4, v6], [], [])[0]:
        data, addr = s.recvfrom(65535)
        if s is v4:
            icmp = data[(data[0] & 0x0F) * 4 :]  # after the IP header
            if len(icmp) < 8 or icmp[0] != 8:
                continue
            reply = b"\0\0\0\0" + icmp[4:]
            reply = reply[:2] + struct.pack("!H", csum(reply)) + reply[4:]
        else:
            if len(data) < 8 or data[0] != 128:
                continue
            reply = bytes([129, 0, 0, 0]) + data[4:]  # the kernel fills the checksum
        threading.Thread(target=later, args=(s, reply, addr), daemon=True).start()

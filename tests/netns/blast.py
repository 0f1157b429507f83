#!/usr/bin/env python3
"""Sends N ICMP echo requests to DST as fast as a raw socket takes them
(the NFQUEUE fail-open test: more than the queue holds)."""
import socket, struct, sys
dst, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def csum(b):
    if len(b) % 2: b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b)//2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
for i in range(n):
    h = struct.pack('!BBHHH', 8, 0, 0, 4242, i & 0xffff) + b'x' * 16
    h = h[:2] + struct.pack('!H', csum(h)) + h[4:]
    s.sendto(h, (dst, 0))

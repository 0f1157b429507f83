// SPDX-License-Identifier: GPL-2.0
/*
 * icmpmon's kernel hook without a module: BPF netfilter programs at
 * PRE_ROUTING ("in", forwarded included) and LOCAL_OUT ("out") for IPv4
 * and IPv6 that copy every ICMP/ICMPv6 packet into a ring buffer, in the
 * module's version-2 record layout (kmod-hook/include/uapi/icmpmon.h), and
 * a kfree_skb tracepoint program that does the same for the ICMP packets
 * the kernel drops in the monitor's network namespace, with the reason.
 *
 * Every packet a program takes is counted once as seen and once as either
 * delivered or lost (a full ring buffer): seen = delivered + lost, per
 * CPU, summed by the reader.
 */
#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

#include "kernel.h"
#include "../../../kmod-hook/include/uapi/icmpmon.h"

#define NF_ACCEPT	1
#define NFPROTO_IPV4	2
#define NFPROTO_IPV6	10
#define NF_INET_PRE_ROUTING	0
#define ETH_P_IP	0x0800
#define ETH_P_IPV6	0x86DD
#define IPPROTO_ICMP	1
#define IPPROTO_ICMPV6	58
/* IPv6 extension headers walked to find ICMPv6; at most this many. */
#define MAX_EXT_HDRS	8

/* Set by the loader before the programs load (constants to the verifier). */
const volatile __u32 snaplen = ICMPMON_SNAPLEN_DEFAULT;
/* The monitor's network namespace (inode of /proc/self/ns/net): drops of
 * other namespaces are none of its business. */
const volatile __u32 netns_ino;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);	/* resized by the loader */
} records SEC(".maps");

/* Per-CPU counters; the reader sums them. Keep in step with bpf/mod.rs. */
enum {
	C_SEEN,		/* ICMP packets the netfilter programs took */
	C_DELIVERED,	/* ... written to the ring buffer */
	C_LOST,		/* ... not: the ring buffer was full */
	C_TRUNCATED,	/* ... shorter than the packet (snaplen) */
	C_DROP_SEEN,	/* ICMP packets the kernel dropped, this namespace */
	C_DROP_DELIVERED,
	C_DROP_LOST,
	C_MAX,
};

struct counters {
	__u64 c[C_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} counters SEC(".maps");

static __always_inline void count(int which)
{
	__u32 zero = 0;
	struct counters *c = bpf_map_lookup_elem(&counters, &zero);

	/* Atomic: a LOCAL_OUT program in process context can be preempted
	 * by one on the same CPU. */
	if (c && which >= 0 && which < C_MAX)
		__sync_fetch_and_add(&c->c[which], 1);
}

/*
 * ICMPv6 behind extension headers: walks at most MAX_EXT_HDRS of them with
 * `read_hdr(off, buf, len)` (a macro over the caller's locals: 0 when read)
 * and says whether the chain ends in ICMPv6 with its header in this packet
 * (not a later fragment).
 */
#define IPV6_IS_ICMP(nexthdr, off, read_hdr)					\
	({									\
		int __icmp = 0;						\
		__u8 __nh = (nexthdr);						\
		__u32 __off = (off);						\
		for (int __i = 0; __i < MAX_EXT_HDRS; __i++) {			\
			__u8 __e[4] = {};					\
			if (__nh == IPPROTO_ICMPV6) {				\
				__icmp = 1;					\
				break;						\
			}							\
			if (__nh != 0 && __nh != 43 && __nh != 60 &&		\
			    __nh != 44 && __nh != 51)				\
				break;						\
			if (read_hdr(__off, __e, sizeof(__e)))			\
				break;						\
			if (__nh == 44) {	/* fragment: fixed 8 bytes */	\
				/* a later fragment quotes no ICMP header */	\
				if ((__e[2] << 5 | __e[3] >> 3) != 0)		\
					break;					\
				__off += 8;					\
			} else if (__nh == 51) {	/* AH: 4-byte units */	\
				__off += ((__u32)__e[1] + 2) * 4;		\
			} else {						\
				__off += ((__u32)__e[1] + 1) * 8;		\
			}							\
			__nh = __e[0];						\
		}								\
		__icmp;								\
	})

/* An IPv4 header (20 bytes) of ICMP whose header is in this packet: not a
 * later fragment, which quotes none (seen before defragmentation: drops,
 * and the hooks of kernels without BPF_F_NETFILTER_IP_DEFRAG). */
#define IPV4_IS_ICMP(v4)							\
	((v4)[9] == IPPROTO_ICMP && !((v4)[6] & 0x1f) && !(v4)[7])

/* The header fields every record has; the reader adds the realtime
 * clock (BPF has only the monotonic one). */
static __always_inline void fill_rec(struct icmpmon_rec *rec, __u16 hdr_len,
				     __u32 origlen, __u32 ifindex, __u8 family,
				     __u8 hook, bool truncated)
{
	rec->hdr_len = hdr_len;
	rec->origlen = origlen;
	rec->ifindex = ifindex;
	rec->family = family;
	rec->hook = hook;
	rec->flags = truncated ? ICMPMON_REC_F_TRUNCATED : 0;
	rec->reserved = 0;
	rec->ts_real_ns = 0;
	rec->ts_mono_ns = bpf_ktime_get_ns();
}

/* ---- netfilter: every ICMP packet at PRE_ROUTING and LOCAL_OUT ---- */

/* Reads from the packet (`pkt`, the program's dynptr). */
#define NF_READ(off, buf, len) bpf_dynptr_read(buf, len, &pkt, off, 0)

SEC("netfilter")
int icmpmon_nf(struct bpf_nf_ctx *ctx)
{
	const struct nf_hook_state *state = ctx->state;
	struct sk_buff *skb = ctx->skb;
	struct bpf_dynptr pkt;
	struct icmpmon_rec *rec;
	struct net_device *dev;
	__u32 len;
	__u64 cap;	/* 64-bit: no zero-extended copy for the verifier to lose */
	__u8 family;

	if (bpf_dynptr_from_skb((struct __sk_buff *)skb, 0, &pkt))
		return NF_ACCEPT;

	if (state->pf == NFPROTO_IPV4) {
		__u8 v4[20] = {};

		if (NF_READ(0, v4, sizeof(v4)) || !IPV4_IS_ICMP(v4))
			return NF_ACCEPT;
		family = ICMPMON_REC_FAMILY_IPV4;
	} else if (state->pf == NFPROTO_IPV6) {
		__u8 v6[8] = {};

		if (NF_READ(0, v6, sizeof(v6)) || !IPV6_IS_ICMP(v6[6], 40, NF_READ))
			return NF_ACCEPT;
		family = ICMPMON_REC_FAMILY_IPV6;
	} else {
		return NF_ACCEPT;
	}

	count(C_SEEN);
	len = skb->len;
	cap = len < snaplen ? len : snaplen;
	rec = bpf_ringbuf_reserve(&records, sizeof(*rec) + snaplen, 0);
	if (!rec) {
		count(C_LOST);
		return NF_ACCEPT;
	}
	if (cap < len)
		count(C_TRUNCATED);
	dev = state->hook == NF_INET_PRE_ROUTING ? state->in : state->out;
	fill_rec(rec, sizeof(*rec), len, dev ? dev->ifindex : 0, family,
		 state->hook == NF_INET_PRE_ROUTING ?
		 ICMPMON_HOOK_PRE_ROUTING : ICMPMON_HOOK_LOCAL_OUT, cap < len);
	/* For the verifier: a bound it sees next to the copy (the compiler
	 * would otherwise reuse an older, unbounded copy of cap). */
	barrier_var(cap);
	if (cap > snaplen)
		cap = snaplen;
	if (bpf_dynptr_read((void *)(rec + 1), cap, &pkt, 0, 0))
		cap = 0;
	rec->caplen = cap;
	bpf_ringbuf_submit(rec, 0);
	count(C_DELIVERED);
	return NF_ACCEPT;
}

/* ---- drops: kfree_skb of ICMP packets in this namespace ---- */

/* Reads from the linear part: `avail` bytes from the network header `l3`. */
#define DROP_READ(off, buf, len)						\
	((off) > avail || (len) > avail - (off) ? -1 :				\
	 bpf_probe_read_kernel(buf, len, l3 + (off)))

static __always_inline unsigned int skb_netns(struct sk_buff *skb)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	struct sock *sk;

	if (dev)
		return BPF_CORE_READ(dev, nd_net.net, ns.inum);
	sk = BPF_CORE_READ(skb, sk);
	if (sk)
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(icmpmon_drop, struct sk_buff *skb, void *location,
	     enum skb_drop_reason reason)
{
	struct icmpmon_rec_drop *rec;
	unsigned char *head, *data, *l3;
	__u32 origlen, avail;
	__u64 cap;
	__u16 proto, nh;
	__u8 family;

	if ((bpf_core_enum_value_exists(enum skb_drop_reason, SKB_NOT_DROPPED_YET) &&
	     reason == bpf_core_enum_value(enum skb_drop_reason, SKB_NOT_DROPPED_YET)) ||
	    (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
	     reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED)))
		return 0;
	proto = BPF_CORE_READ(skb, protocol);
	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
		return 0;
	if (skb_netns(skb) != netns_ino)
		return 0;

	/* The linear part from the network header on: what can be read. */
	head = BPF_CORE_READ(skb, head);
	data = BPF_CORE_READ(skb, data);
	nh = BPF_CORE_READ(skb, network_header);
	if (nh == (__u16)~0U)
		return 0;
	l3 = head + nh;
	{
		long end = (long)(data - head) + BPF_CORE_READ(skb, len) -
			   BPF_CORE_READ(skb, data_len);

		if (end <= nh || end - nh > 0xffff)
			return 0;
		avail = end - nh;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 v4[20] = {};

		if (DROP_READ(0, v4, sizeof(v4)) || (v4[0] >> 4) != 4 || !IPV4_IS_ICMP(v4))
			return 0;
		origlen = ((__u32)v4[2] << 8) | v4[3];
		family = ICMPMON_REC_FAMILY_IPV4;
	} else {
		__u8 v6[8] = {};

		if (DROP_READ(0, v6, sizeof(v6)) || (v6[0] >> 4) != 6 ||
		    !IPV6_IS_ICMP(v6[6], 40, DROP_READ))
			return 0;
		origlen = 40 + (((__u32)v6[4] << 8) | v6[5]);
		family = ICMPMON_REC_FAMILY_IPV6;
	}

	count(C_DROP_SEEN);
	cap = avail < origlen ? avail : origlen;
	if (cap > snaplen)
		cap = snaplen;
	rec = bpf_ringbuf_reserve(&records, sizeof(*rec) + snaplen, 0);
	if (!rec) {
		count(C_DROP_LOST);
		return 0;
	}
	fill_rec(&rec->rec, sizeof(*rec), origlen, BPF_CORE_READ(skb, dev, ifindex),
		 family, ICMPMON_HOOK_DROP, cap < origlen);
	rec->reason = reason;
	rec->reserved2 = 0;
	rec->location = (__u64)location;
	/* For the verifier: a bound it sees next to the copy (the compiler
	 * would otherwise reuse an older, unbounded copy of cap). */
	barrier_var(cap);
	if (cap > snaplen)
		cap = snaplen;
	if (bpf_probe_read_kernel((void *)(rec + 1), cap, l3))
		cap = 0;
	rec->rec.caplen = cap;
	bpf_ringbuf_submit(rec, 0);
	count(C_DROP_DELIVERED);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel types icmpmon's BPF programs read, as CO-RE relocatable
 * declarations: libbpf matches each field by name against the running
 * kernel's BTF at load time, so the build never depends on the build
 * machine's kernel (no vmlinux.h). Only the fields used are declared.
 */
#ifndef ICMPMON_BPF_KERNEL_H
#define ICMPMON_BPF_KERNEL_H

#define __pai __attribute__((preserve_access_index))

struct ns_common {
	unsigned int inum;
} __pai;

struct net {
	struct ns_common ns;
} __pai;

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __pai;

struct sock_common {
	possible_net_t skc_net;
} __pai;

struct sock {
	struct sock_common __sk_common;
} __pai;

struct sk_buff {
	unsigned int len;
	unsigned int data_len;
	__u16 protocol;
	__u16 network_header;
	unsigned char *head;
	unsigned char *data;
	struct net_device *dev;
	struct sock *sk;
} __pai;

struct nf_hook_state {
	__u8 hook;
	__u8 pf;
	struct net_device *in;
	struct net_device *out;
} __pai;

/* The context of BPF_PROG_TYPE_NETFILTER programs. */
struct bpf_nf_ctx {
	const struct nf_hook_state *state;
	struct sk_buff *skb;
} __pai;

/* Only the values the drop program compares against; CO-RE reads the
 * running kernel's numbers (they differ between kernels). */
enum skb_drop_reason {
	SKB_NOT_DROPPED_YET = 0,
	SKB_CONSUMED = 1,
};

/*
 * kfuncs (6.4+ for netfilter programs). Weak: libbpf resolves every extern
 * of the object, and drop tracing alone (--drops) loads on kernels that
 * lack them.
 */
extern int bpf_dynptr_from_skb(struct __sk_buff *skb, __u64 flags,
			       struct bpf_dynptr *ptr) __ksym __weak;

#endif

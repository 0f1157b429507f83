/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * icmpmon: kernel <-> user ABI, version 2 (generic netlink family "icmpmon").
 *
 * The Rust mirror lives in capture/src/kmod/abi.rs; tests/uapi_layout.rs compiles this
 * header and checks every size, offset and constant against it.
 *
 * Version 2 (the family's version number) changed the record layout: each
 * record says how long its header is, so fields can be appended without
 * breaking readers, and records are 8-byte aligned. A reader checks the
 * family version (CTRL_ATTR_VERSION) before it registers.
 */
#ifndef _UAPI_LINUX_ICMPMON_H
#define _UAPI_LINUX_ICMPMON_H

#include <linux/types.h>

#define ICMPMON_GENL_NAME	"icmpmon"
#define ICMPMON_GENL_VERSION	2

enum icmpmon_cmd {
	ICMPMON_CMD_UNSPEC,
	ICMPMON_CMD_REGISTER,	/* user -> kernel: subscribe the sender's portid */
	ICMPMON_CMD_CLOSE,	/* user -> kernel: flush, then unsubscribe;
				 * kernel -> user: the reply, before the ACK,
				 * carries SEQ, LOST and SEEN (the tail) */
	ICMPMON_CMD_RECORDS,	/* kernel -> user: one batch of records */
	ICMPMON_CMD_STATS,	/* both: request / reply with counters */
	ICMPMON_CMD_BYE,	/* kernel -> user: subscription ended by the kernel
				 * (BYE_REASON and the tail) */
	__ICMPMON_CMD_MAX,
};
#define ICMPMON_CMD_MAX (__ICMPMON_CMD_MAX - 1)

enum icmpmon_attr {
	ICMPMON_A_UNSPEC,
	ICMPMON_A_HOOK_MASK,	/* u32, REGISTER: ICMPMON_HOOK_F_* */
	ICMPMON_A_FAMILY_MASK,	/* u32, REGISTER: ICMPMON_FAMILY_F_* */
	ICMPMON_A_SNAPLEN,	/* u32, REGISTER: bytes kept from the IP header */
	ICMPMON_A_BATCH_BYTES,	/* u32, REGISTER: target batch size */
	ICMPMON_A_FLUSH_MS,	/* u32, REGISTER: flush a partial batch after */
	ICMPMON_A_SEQ,		/* u64, RECORDS: per subscriber, +1 per batch;
				 * tail: the SEQ the next batch would have had */
	ICMPMON_A_LOST,		/* u64, RECORDS and tail: records lost since the last delivered batch */
	ICMPMON_A_RECORDS,	/* binary, RECORDS: packed records, see below */
	ICMPMON_A_BYE_REASON,	/* u32, BYE: enum icmpmon_bye_reason */
	ICMPMON_A_STAT_PACKETS,	/* u64, STATS: ICMP packets seen by the hooks */
	ICMPMON_A_STAT_SEEN,	/* u64, STATS: records made for subscribers */
	ICMPMON_A_STAT_DELIVERED,	/* u64, STATS: records netlink accepted */
	ICMPMON_A_STAT_LOST_NOBUFS,	/* u64, STATS: records in batches refused by a full socket */
	ICMPMON_A_STAT_LOST_NOMEM,	/* u64, STATS: records with no batch buffer */
	ICMPMON_A_STAT_LOST_CLOSED,	/* u64, STATS: records pending when a socket closed */
	ICMPMON_A_STAT_TRUNCATED,	/* u64, STATS: records shorter than the packet */
	ICMPMON_A_STAT_SUBSCRIBERS,	/* u32, STATS: current subscribers */
	ICMPMON_A_PAD,
	/* Version 2 */
	ICMPMON_A_STAT_LOST_OTHER,	/* u64, STATS: records netlink refused for another reason */
	ICMPMON_A_STAT_SUBSCRIBED,	/* u32, STATS: 1 if the asking socket is a subscriber */
	ICMPMON_A_SEEN,		/* u64, tail: records made for this subscriber in all */
	__ICMPMON_A_MAX,
};
#define ICMPMON_A_MAX (__ICMPMON_A_MAX - 1)

enum icmpmon_hook {
	ICMPMON_HOOK_PRE_ROUTING,	/* direction "in" (includes forwarded) */
	ICMPMON_HOOK_LOCAL_OUT,		/* direction "out" */
	/*
	 * Not a netfilter hook: the BPF source's drop tracing (kfree_skb)
	 * writes records in this layout too; the module never does, and
	 * has no mask bit for it.  Such records carry struct
	 * icmpmon_rec_drop.
	 */
	ICMPMON_HOOK_DROP,		/* direction "drop" */
};
/*
 * Mask bits.  There is deliberately no "all" mask here: one defined from
 * the enum would grow with this header, and a program built against a newer
 * header would then be refused by an older module.  Name the bits you want.
 */
#define ICMPMON_HOOK_F_PRE_ROUTING	(1U << ICMPMON_HOOK_PRE_ROUTING)
#define ICMPMON_HOOK_F_LOCAL_OUT	(1U << ICMPMON_HOOK_LOCAL_OUT)

#define ICMPMON_FAMILY_F_IPV4	(1U << 0)
#define ICMPMON_FAMILY_F_IPV6	(1U << 1)

enum icmpmon_bye_reason {
	ICMPMON_BYE_UNSPEC,
	ICMPMON_BYE_UNLOAD,	/* the module is being removed */
	/*
	 * 2 was "network namespace exit" in version 1; it cannot happen: a
	 * subscriber's socket keeps its namespace alive.
	 */
};

/* REGISTER limits; out-of-range values are refused with an extack message. */
#define ICMPMON_SNAPLEN_MIN		64
#define ICMPMON_SNAPLEN_MAX		4096
#define ICMPMON_SNAPLEN_DEFAULT		256
#define ICMPMON_BATCH_BYTES_MIN		1024
#define ICMPMON_BATCH_BYTES_MAX		61440	/* RECORDS must fit a u16 nla_len */
#define ICMPMON_BATCH_BYTES_DEFAULT	16384
#define ICMPMON_FLUSH_MS_MIN		1
#define ICMPMON_FLUSH_MS_MAX		1000
#define ICMPMON_FLUSH_MS_DEFAULT	5

/* icmpmon_rec.family */
#define ICMPMON_REC_FAMILY_IPV4	4
#define ICMPMON_REC_FAMILY_IPV6	6

/* icmpmon_rec.flags */
#define ICMPMON_REC_F_TRUNCATED	(1U << 0)	/* caplen < origlen */

/*
 * ICMPMON_A_RECORDS holds records back to back.  Its payload starts 8-byte
 * aligned from the start of the netlink message, and each record starts at
 * a multiple of ICMPMON_REC_ALIGN from it, so a reader whose buffer is
 * 8-byte aligned may cast.  A record is a header of hdr_len bytes (at least
 * ICMPMON_REC_HDR_LEN_V2; later versions append fields, which older readers
 * skip), then caplen bytes of the packet from its IP header (network byte
 * order), then zero padding to the next ICMPMON_REC_ALIGN boundary:
 *
 *	next = ALIGN(hdr_len + caplen, ICMPMON_REC_ALIGN)
 *
 * Header fields are in host byte order.
 */
struct icmpmon_rec {
	__u16 hdr_len;		/* bytes of this header: packet data follows */
	__u16 caplen;		/* packet bytes that follow the header */
	__u32 origlen;		/* packet length from the IP header */
	__u32 ifindex;		/* in: receiving device, out: sending device */
	__u8 family;		/* ICMPMON_REC_FAMILY_* */
	__u8 hook;		/* enum icmpmon_hook */
	__u8 flags;		/* ICMPMON_REC_F_* */
	__u8 reserved;		/* zero */
	__u64 ts_real_ns;	/* CLOCK_REALTIME when the hook saw it */
	__u64 ts_mono_ns;	/* CLOCK_MONOTONIC, same instant: immune to clock steps */
};

#define ICMPMON_REC_HDR_LEN_V2	32
#define ICMPMON_REC_ALIGN	8

/*
 * A drop record (hook ICMPMON_HOOK_DROP) appends to the version-2 header,
 * so a reader that does not know it still reads the packet.
 */
struct icmpmon_rec_drop {
	struct icmpmon_rec rec;
	__u32 reason;		/* the running kernel's enum skb_drop_reason value */
	__u32 reserved2;	/* zero */
	__u64 location;		/* address of the code that dropped it */
};

#define ICMPMON_REC_HDR_LEN_DROP	48

#endif /* _UAPI_LINUX_ICMPMON_H */

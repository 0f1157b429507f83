// SPDX-License-Identifier: GPL-2.0
/*
 * icmpmon: netfilter hooks that copy every ICMP and ICMPv6 packet into
 * compact records and unicast them in batches, over generic netlink, to the
 * processes that registered.  ABI: include/uapi/icmpmon.h.
 *
 * Locking and lifetimes:
 *  - pn->lock (a mutex per namespace) serialises every change to that
 *    namespace's subscriber table and hook registration (REGISTER, CLOSE,
 *    URELEASE, unload); namespaces never wait for each other.
 *  - The hooks find subscribers under RCU (nf_hook_slow() holds it).  A
 *    subscriber leaving the table is marked dead under sub->lock, so no
 *    batch is queued after that; the unsubscriber stops the timer, takes
 *    the SENDING bit for good and sends or drops what is queued.  The memory
 *    goes after a grace period (kfree_rcu), for hooks still looking at it.
 *  - sub->lock (BH-safe) guards the batch being filled.  A full batch is
 *    queued on sub->out; whoever holds the SENDING bit unicasts the queue in
 *    order with no lock held, so SEQ order is delivery order and no CPU
 *    waits for netlink under a lock.
 *  - Counters are per CPU and summed when read.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/version.h>
#include <linux/skbuff.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/netfilter.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6.h>
#include <linux/netlink.h>
#include <linux/notifier.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/timer.h>
#include <linux/timekeeping.h>
#include <linux/delay.h>
#include <linux/percpu.h>
#include <linux/u64_stats_sync.h>
#include <linux/rcupdate.h>
#include <linux/mutex.h>
#include <linux/rwsem.h>
#include <linux/uidgid.h>
#include <linux/fs.h>
#include <linux/net.h>
#include <net/genetlink.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>
#include <net/sock.h>
#include <net/ipv6.h>
#include <net/netfilter/ipv4/nf_defrag_ipv4.h>
#include <net/netfilter/ipv6/nf_defrag_ipv6.h>

#include "include/uapi/icmpmon.h"

/* ---- compatibility with older kernels ---- */

/* from_timer() was renamed in 6.16 and the old name removed. */
#ifndef timer_container_of
#define timer_container_of(var, t, field) from_timer(var, t, field)
#endif

/*
 * timer_delete_sync() came with 6.2 (and late in 6.1.y); del_timer_sync()
 * is in every 6.1.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 2, 0)
#define timer_delete_sync(t) del_timer_sync(t)
#endif

/*
 * Test builds only (tests/vm/run.sh): records as a later version would
 * send them, with this many more header bytes, to show that readers skip
 * header fields they do not know.  Zero in every real build.
 */
#ifndef ICMPMON_TEST_HDR_EXTRA
#define ICMPMON_TEST_HDR_EXTRA 0
#endif
#define ICMPMON_REC_HDR_LEN (sizeof(struct icmpmon_rec) + ICMPMON_TEST_HDR_EXTRA)

#define ICMPMON_SUBS_LIMIT 16
/* Closed batches a subscriber may have waiting for a sender. */
#define ICMPMON_OUT_MAX 64
/* Batches one call of icmpmon_sub_drain() sends; the timer does the rest. */
#define ICMPMON_DRAIN_BUDGET 16
#define ICMPMON_HOOK_MASK_ALL (ICMPMON_HOOK_F_PRE_ROUTING | ICMPMON_HOOK_F_LOCAL_OUT)
/*
 * The largest batch payload whose buffer stays within two pages: the hook
 * allocates in softirq, where an order > 1 allocation may fail or stall
 * reclaim.  A larger BATCH_BYTES is served in batches of this size.
 */
#define ICMPMON_BATCH_ALLOC_MAX \
	(SKB_WITH_OVERHEAD(PAGE_SIZE << 1) - NLMSG_HDRLEN - GENL_HDRLEN)
/* The largest batch payload whose buffer fits one page. */
#define ICMPMON_BATCH_ALLOC_PAGE \
	(SKB_WITH_OVERHEAD(PAGE_SIZE) - NLMSG_HDRLEN - GENL_HDRLEN)
#define ICMPMON_FAMILY_MASK_ALL (ICMPMON_FAMILY_F_IPV4 | ICMPMON_FAMILY_F_IPV6)

static unsigned int max_subscribers = 8;
module_param(max_subscribers, uint, 0444);
MODULE_PARM_DESC(max_subscribers,
		 "subscribers per network namespace (1-16, default 8)");

static bool userns_subscribe;
module_param(userns_subscribe, bool, 0644);
MODULE_PARM_DESC(userns_subscribe,
		 "let root of a user namespace (CAP_NET_ADMIN over its network namespace) subscribe and read STATS (default N: CAP_NET_ADMIN in the initial user namespace)");

/* Per-CPU counters; the names are those of STATS and /proc/net/icmpmon. */
enum icmpmon_stat {
	ICMPMON_STAT_PACKETS,
	ICMPMON_STAT_SEEN,
	ICMPMON_STAT_DELIVERED,
	ICMPMON_STAT_LOST_NOBUFS,
	ICMPMON_STAT_LOST_NOMEM,
	ICMPMON_STAT_LOST_CLOSED,
	ICMPMON_STAT_LOST_OTHER,
	ICMPMON_STAT_TRUNCATED,
	__ICMPMON_STAT_MAX,
};

static const struct {
	int attr;
	const char *name;
} icmpmon_stat_names[__ICMPMON_STAT_MAX] = {
	[ICMPMON_STAT_PACKETS]	   = { ICMPMON_A_STAT_PACKETS, "packets" },
	[ICMPMON_STAT_SEEN]	   = { ICMPMON_A_STAT_SEEN, "seen" },
	[ICMPMON_STAT_DELIVERED]   = { ICMPMON_A_STAT_DELIVERED, "delivered" },
	[ICMPMON_STAT_LOST_NOBUFS] = { ICMPMON_A_STAT_LOST_NOBUFS, "lost_nobufs" },
	[ICMPMON_STAT_LOST_NOMEM]  = { ICMPMON_A_STAT_LOST_NOMEM, "lost_nomem" },
	[ICMPMON_STAT_LOST_CLOSED] = { ICMPMON_A_STAT_LOST_CLOSED, "lost_closed" },
	[ICMPMON_STAT_LOST_OTHER]  = { ICMPMON_A_STAT_LOST_OTHER, "lost_other" },
	[ICMPMON_STAT_TRUNCATED]   = { ICMPMON_A_STAT_TRUNCATED, "truncated" },
};

struct icmpmon_pcpu_stats {
	u64_stats_t v[__ICMPMON_STAT_MAX];
	struct u64_stats_sync syncp;
};

struct icmpmon_net;

enum {
	ICMPMON_SUB_SENDING,	/* a CPU is unicasting sub->out */
};

struct icmpmon_sub {
	struct icmpmon_net *pn;
	struct sock *sk;		/* the registered socket, referenced */
	u32 portid;
	u32 hook_mask;
	u32 family_mask;
	u32 snaplen;
	u32 batch_bytes;
	unsigned long flush_jiffies;

	spinlock_t lock;		/* the open batch, unqueued, dead */
	struct sk_buff *skb;		/* batch being filled, or NULL */
	struct nlattr *records;		/* its open ICMPMON_A_RECORDS */
	u32 nrecs;			/* records in it */
	unsigned int limit;		/* skb->len it may reach */
	unsigned long deadline;		/* when it goes (jiffies) */
	u64 unqueued;			/* records lost before the open batch */
	u64 seen;			/* records made for it in all */
	bool dead;			/* unsubscribed: queue nothing more */

	struct sk_buff_head out;	/* closed batches, oldest first */
	unsigned long flags;		/* ICMPMON_SUB_* bits */
	u64 seq;			/* SENDING holder: SEQ of the next batch */
	u64 lost;			/* SENDING holder: lost since last delivery */

	struct timer_list timer;	/* closes a partial batch, sends */
	struct rcu_head rcu;
};

/* What a closed batch carries to the sender, in skb->cb. */
struct icmpmon_batch_cb {
	void *hdr;			/* genetlink header, for genlmsg_end() */
	u32 nrecs;
	u64 unqueued;			/* records lost before this batch */
};

#define ICMPMON_BATCH_CB(skb) ((struct icmpmon_batch_cb *)(skb)->cb)

struct icmpmon_net {
	struct net *net;
	struct mutex lock;		/* subs, nsubs, ops_on */
	struct icmpmon_sub __rcu *subs[ICMPMON_SUBS_LIMIT];
	unsigned int nsubs;		/* also read locklessly */
	u32 ops_on;			/* icmpmon_nf_ops[] registered, as bits */
	struct icmpmon_pcpu_stats __percpu *stats;
	struct list_head unload;	/* icmpmon_exit()'s list */
};

/* What the hook learned about one packet; shared by every subscriber. */
struct icmpmon_pkt {
	const struct sk_buff *skb;
	u64 ts_real_ns;
	u64 ts_mono_ns;
	u32 ifindex;
	u32 len;
	u8 family;
	u8 hook;
};

static unsigned int icmpmon_net_id __read_mostly;
/* Set once by icmpmon_exit() before it takes any pn->lock; read under one. */
static bool icmpmon_unloading;
static struct genl_family icmpmon_family;

/* Room kept free at the end of a batch for the SEQ and LOST attributes. */
#define ICMPMON_BATCH_TRAILER (2 * nla_total_size_64bit(sizeof(u64)))

static struct icmpmon_net *icmpmon_pernet(const struct net *net)
{
	return net_generic(net, icmpmon_net_id);
}

static unsigned int icmpmon_rec_size(u32 caplen)
{
	return ALIGN(ICMPMON_REC_HDR_LEN + caplen, ICMPMON_REC_ALIGN);
}

/* ---- counters ---- */

/*
 * Under a subscriber's lock (spin_lock_bh): BH is off, so this CPU's
 * counters are not updated from another context meanwhile.  The hooks
 * themselves may run with BH on (LOCAL_OUT from process context): they use
 * icmpmon_stat_add().
 */
static void __icmpmon_stat_add(struct icmpmon_net *pn, enum icmpmon_stat s,
			       u64 n)
{
	struct icmpmon_pcpu_stats *st = this_cpu_ptr(pn->stats);

	u64_stats_update_begin(&st->syncp);
	u64_stats_add(&st->v[s], n);
	u64_stats_update_end(&st->syncp);
}

/* Any context but hard IRQ. */
static void icmpmon_stat_add(struct icmpmon_net *pn, enum icmpmon_stat s,
			     u64 n)
{
	local_bh_disable();
	__icmpmon_stat_add(pn, s, n);
	local_bh_enable();
}

/* Sums every CPU's counters; each one is read without tearing. */
static void icmpmon_stats_read(struct icmpmon_net *pn,
			       u64 sum[__ICMPMON_STAT_MAX])
{
	int cpu, i;

	memset(sum, 0, sizeof(u64) * __ICMPMON_STAT_MAX);
	for_each_possible_cpu(cpu) {
		const struct icmpmon_pcpu_stats *st = per_cpu_ptr(pn->stats, cpu);
		u64 v[__ICMPMON_STAT_MAX];
		unsigned int start;

		do {
			start = u64_stats_fetch_begin(&st->syncp);
			for (i = 0; i < __ICMPMON_STAT_MAX; i++)
				v[i] = u64_stats_read(&st->v[i]);
		} while (u64_stats_fetch_retry(&st->syncp, start));
		for (i = 0; i < __ICMPMON_STAT_MAX; i++)
			sum[i] += v[i];
	}
}

/*
 * get_file_active() came with 6.7, when files became SLAB_TYPESAFE_BY_RCU.
 * It takes the address of the pointer it read the file from, to see after
 * taking a reference that the slot still holds that file and the memory
 * was not reused for another; we pass a copy on the stack, which always
 * does.  That is safe only because the caller holds sk_callback_lock with
 * the socket not yet orphaned: the file's release cannot get past
 * sock_orphan(), so its memory is not freed, let alone reused, meanwhile;
 * the reference fails cleanly if its count already dropped to zero.
 */
static struct file *icmpmon_get_file_active(struct file *file)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	return get_file_active(&file);
#else
	return get_file_rcu(file) ? file : NULL;
#endif
}

/*
 * A reference on the registered socket's file while the socket is open;
 * NULL once it is closing.  A closing socket leaves the portid table
 * (netlink_remove()) long before the URELEASE notifier drops its
 * subscription, and any process may bind the freed portid meanwhile, so the
 * portid alone proves nothing.  But the socket is released only after its
 * file's last reference is gone: while we hold one, the portid is still
 * ours.  sk_callback_lock holds off sock_orphan(), and with it the freeing
 * of the file, while we take it.  Drop it with fput() (any context) once
 * the message is sent.
 */
static struct file *icmpmon_hold_file(struct sock *sk)
{
	struct file *file = NULL;
	struct socket *sock;

	read_lock_bh(&sk->sk_callback_lock);
	sock = sk->sk_socket;
	if (!sock_flag(sk, SOCK_DEAD) && sock && sock->file)
		file = icmpmon_get_file_active(sock->file);
	read_unlock_bh(&sk->sk_callback_lock);
	return file;
}

/*
 * Unicasts @skb to the subscriber, only to its own socket (see
 * icmpmon_hold_file()).  Consumes @skb; returns netlink's verdict, or
 * -ECONNREFUSED when the socket is closing.
 */
static int icmpmon_unicast(struct icmpmon_sub *sub, struct sk_buff *skb)
{
	struct file *file = icmpmon_hold_file(sub->sk);
	int err;

	if (!file) {
		kfree_skb(skb);
		return -ECONNREFUSED;
	}
	/* Non-blocking; the skb is consumed either way. */
	err = genlmsg_unicast(sub->pn->net, skb, sub->portid);
	fput(file);
	return err;
}

/* ---- batches ---- */

/* Opens a batch with room for a record of @need bytes.  sub->lock held. */
static int icmpmon_batch_open(struct icmpmon_sub *sub, unsigned int need)
{
	size_t min = 2 * NLA_HDRLEN + need + ICMPMON_BATCH_TRAILER;
	size_t want = clamp_t(size_t, sub->batch_bytes, min,
			      max_t(size_t, min, ICMPMON_BATCH_ALLOC_MAX));
	struct icmpmon_batch_cb *cb;
	struct sk_buff *skb;
	void *hdr;

	skb = genlmsg_new(want, GFP_ATOMIC | __GFP_NOWARN);
	/* Under memory pressure: one page, then the least. */
	if (!skb && want > ICMPMON_BATCH_ALLOC_PAGE &&
	    ICMPMON_BATCH_ALLOC_PAGE >= min) {
		want = ICMPMON_BATCH_ALLOC_PAGE;
		skb = genlmsg_new(want, GFP_ATOMIC | __GFP_NOWARN);
	}
	if (!skb && want > min) {
		want = min;
		skb = genlmsg_new(want, GFP_ATOMIC | __GFP_NOWARN);
	}
	if (!skb)
		return -ENOMEM;

	hdr = genlmsg_put(skb, 0, 0, &icmpmon_family, 0, ICMPMON_CMD_RECORDS);
	if (!hdr) {
		kfree_skb(skb);
		return -ENOMEM;
	}
	/*
	 * The records must start 8-byte aligned from the message: put an
	 * empty PAD attribute first when they would not.
	 */
	if (!IS_ALIGNED(skb->len + NLA_HDRLEN, ICMPMON_REC_ALIGN) &&
	    nla_put(skb, ICMPMON_A_PAD, 0, NULL)) {
		kfree_skb(skb);
		return -ENOMEM;
	}
	/*
	 * RECORDS grows as records are appended; its length is set when the
	 * batch is closed, the way nla_nest_end() does for nests.
	 */
	sub->records = skb_put(skb, NLA_HDRLEN);
	sub->records->nla_type = ICMPMON_A_RECORDS;
	sub->records->nla_len = NLA_HDRLEN;
	cb = ICMPMON_BATCH_CB(skb);
	cb->hdr = hdr;
	sub->skb = skb;
	sub->nrecs = 0;
	/*
	 * The size asked for, not the tailroom: kmalloc rounds up, and a
	 * batch filled to the rounding would be twice BATCH_BYTES.
	 */
	sub->limit = NLMSG_HDRLEN + GENL_HDRLEN + want;
	return 0;
}

static bool icmpmon_batch_fits(const struct icmpmon_sub *sub,
			       unsigned int need)
{
	const struct sk_buff *skb = sub->skb;
	size_t attr_len = skb_tail_pointer(skb) - (unsigned char *)sub->records;

	return skb->len + need + ICMPMON_BATCH_TRAILER <= sub->limit &&
	       skb_tailroom(skb) >= need + ICMPMON_BATCH_TRAILER &&
	       attr_len + need <= U16_MAX;
}

/*
 * Moves the open batch to the send queue, or drops it when senders are
 * that far behind (counted like a full socket).  sub->lock held.
 */
static void icmpmon_batch_close(struct icmpmon_sub *sub)
{
	struct sk_buff *skb = sub->skb;
	struct icmpmon_batch_cb *cb = ICMPMON_BATCH_CB(skb);

	sub->skb = NULL;
	if (skb_queue_len(&sub->out) >= ICMPMON_OUT_MAX) {
		sub->unqueued += sub->nrecs;
		__icmpmon_stat_add(sub->pn, ICMPMON_STAT_LOST_NOBUFS, sub->nrecs);
		sub->nrecs = 0;
		kfree_skb(skb);
		return;
	}
	sub->records->nla_len = skb_tail_pointer(skb) -
				(unsigned char *)sub->records;
	cb->nrecs = sub->nrecs;
	cb->unqueued = sub->unqueued;
	sub->unqueued = 0;
	sub->nrecs = 0;
	skb_queue_tail(&sub->out, skb);
}

/*
 * Unicasts one closed batch.  Only the SENDING holder (or the unsubscriber,
 * once nobody else can run) calls this, so seq and lost need no lock.
 */
static void icmpmon_batch_send(struct icmpmon_sub *sub, struct sk_buff *skb)
{
	struct icmpmon_batch_cb cb = *ICMPMON_BATCH_CB(skb);
	struct icmpmon_net *pn = sub->pn;
	u64 lost = sub->lost + cb.unqueued;
	enum icmpmon_stat fate;
	int err;

	/* Receivers read NETLINK_CB() from the same bytes. */
	memset(skb->cb, 0, sizeof(skb->cb));
	if (nla_put_u64_64bit(skb, ICMPMON_A_SEQ, sub->seq, ICMPMON_A_PAD) ||
	    nla_put_u64_64bit(skb, ICMPMON_A_LOST, lost, ICMPMON_A_PAD)) {
		/* Cannot happen: the trailer room was kept free. */
		WARN_ON_ONCE(1);
		kfree_skb(skb);
		sub->lost = lost + cb.nrecs;
		icmpmon_stat_add(pn, ICMPMON_STAT_LOST_NOMEM, cb.nrecs);
		return;
	}
	genlmsg_end(skb, cb.hdr);
	sub->seq++;

	err = icmpmon_unicast(sub, skb);
	switch (err) {
	case 0:
		sub->lost = 0;
		fate = ICMPMON_STAT_DELIVERED;
		break;
	case -EAGAIN:		/* receive buffer full (MSG_DONTWAIT) */
	case -ENOBUFS:
		fate = ICMPMON_STAT_LOST_NOBUFS;
		break;
	case -ECONNREFUSED:	/* socket gone */
		fate = ICMPMON_STAT_LOST_CLOSED;
		break;
	default:
		fate = ICMPMON_STAT_LOST_OTHER;
		break;
	}
	if (err)
		sub->lost = lost + cb.nrecs;
	icmpmon_stat_add(pn, fate, cb.nrecs);
}

/*
 * Sends the queued batches, unless another CPU already is (it sends ours
 * too).  Called without sub->lock, from a hook, the timer or process
 * context, with BH off so that on most kernels a sender is not preempted
 * while others wait for it.  After ICMPMON_DRAIN_BUDGET batches it leaves
 * the rest to the timer, so no CPU is kept sending for others forever.
 */
static void icmpmon_sub_drain(struct icmpmon_sub *sub)
{
	unsigned int budget = ICMPMON_DRAIN_BUDGET;
	struct sk_buff *skb;

	local_bh_disable();
	do {
		/*
		 * Orders the caller's skb_queue_tail() before the test: a
		 * test_and_set_bit_lock() that fails orders nothing.
		 */
		smp_mb();
		if (test_and_set_bit_lock(ICMPMON_SUB_SENDING, &sub->flags))
			goto out;
		while (budget && (skb = skb_dequeue(&sub->out))) {
			icmpmon_batch_send(sub, skb);
			budget--;
		}
		clear_bit_unlock(ICMPMON_SUB_SENDING, &sub->flags);
		/* A batch queued while we held the bit was left to us. */
		smp_mb__after_atomic();
	} while (budget && !skb_queue_empty_lockless(&sub->out));
	if (!skb_queue_empty_lockless(&sub->out)) {
		spin_lock(&sub->lock);
		if (!sub->dead)
			timer_reduce(&sub->timer, jiffies + 1);
		spin_unlock(&sub->lock);
	}
out:
	local_bh_enable();
}

static void icmpmon_sub_timer(struct timer_list *t)
{
	struct icmpmon_sub *sub = timer_container_of(sub, t, timer);

	spin_lock_bh(&sub->lock);
	if (!sub->dead && sub->skb) {
		/* A drain retry fired first: the open batch keeps filling. */
		if (time_after_eq(jiffies, sub->deadline))
			icmpmon_batch_close(sub);
		else
			timer_reduce(&sub->timer, sub->deadline);
	}
	spin_unlock_bh(&sub->lock);
	icmpmon_sub_drain(sub);
}

static void icmpmon_sub_record(struct icmpmon_sub *sub,
			       const struct icmpmon_pkt *pkt)
{
	struct icmpmon_net *pn = sub->pn;
	u32 caplen = min(pkt->len, sub->snaplen);
	unsigned int need = icmpmon_rec_size(caplen);
	struct icmpmon_rec *rec;
	u8 *data;
	bool queued = false;

	spin_lock_bh(&sub->lock);
	if (sub->dead)
		goto out;
	sub->seen++;
	__icmpmon_stat_add(pn, ICMPMON_STAT_SEEN, 1);

	if (sub->skb && !icmpmon_batch_fits(sub, need)) {
		icmpmon_batch_close(sub);
		queued = true;
	}
	if (!sub->skb) {
		if (icmpmon_batch_open(sub, need)) {
			sub->unqueued++;
			__icmpmon_stat_add(pn, ICMPMON_STAT_LOST_NOMEM, 1);
			goto out;
		}
		/* Only ever earlier: a pending drain retry keeps its time. */
		sub->deadline = jiffies + sub->flush_jiffies;
		timer_reduce(&sub->timer, sub->deadline);
	}

	rec = skb_put_zero(sub->skb, need);
	rec->hdr_len = ICMPMON_REC_HDR_LEN;
	rec->caplen = caplen;
	rec->origlen = pkt->len;
	rec->ifindex = pkt->ifindex;
	rec->family = pkt->family;
	rec->hook = pkt->hook;
	rec->ts_real_ns = pkt->ts_real_ns;
	rec->ts_mono_ns = pkt->ts_mono_ns;
	if (caplen < pkt->len) {
		rec->flags |= ICMPMON_REC_F_TRUNCATED;
		__icmpmon_stat_add(pn, ICMPMON_STAT_TRUNCATED, 1);
	}
	data = (u8 *)rec + ICMPMON_REC_HDR_LEN;
#if ICMPMON_TEST_HDR_EXTRA
	memset(rec + 1, 0xa5, ICMPMON_TEST_HDR_EXTRA);
#endif
	/* Cannot fail: caplen is within the packet. */
	WARN_ON_ONCE(skb_copy_bits(pkt->skb, skb_network_offset(pkt->skb),
				   data, caplen));
	sub->nrecs++;
out:
	spin_unlock_bh(&sub->lock);
	if (queued)
		icmpmon_sub_drain(sub);
}

/* ---- netfilter hooks ---- */

static bool icmpmon_is_icmp(struct sk_buff *skb, u8 pf)
{
	if (pf == NFPROTO_IPV4) {
		const struct iphdr *iph;
		struct iphdr _iph;

		iph = skb_header_pointer(skb, skb_network_offset(skb),
					 sizeof(_iph), &_iph);
		/*
		 * A non-first fragment carries no ICMP header.  After
		 * defragmentation only fragments defrag leaves alone get here
		 * (IP_NODEFRAG sockets, packets that already have conntrack).
		 */
		return iph && iph->ihl >= 5 && iph->protocol == IPPROTO_ICMP &&
		       !(ntohs(iph->frag_off) & IP_OFFSET);
	}
	if (pf == NFPROTO_IPV6) {
		unsigned int thoff = 0;
		unsigned short fragoff = 0;

		/* Walks extension headers with skb_header_pointer(). */
		return ipv6_find_hdr(skb, &thoff, IPPROTO_ICMPV6, &fragoff,
				     NULL) == IPPROTO_ICMPV6 && !fragoff;
	}
	return false;
}

static unsigned int icmpmon_nf_hook(void *priv, struct sk_buff *skb,
				    const struct nf_hook_state *state)
{
	struct icmpmon_net *pn = icmpmon_pernet(state->net);
	const struct net_device *dev;
	struct icmpmon_pkt pkt;
	u32 hook_bit, family_bit;
	int i;

	if (!icmpmon_is_icmp(skb, state->pf))
		return NF_ACCEPT;
	icmpmon_stat_add(pn, ICMPMON_STAT_PACKETS, 1);

	if (state->hook == NF_INET_PRE_ROUTING) {
		pkt.hook = ICMPMON_HOOK_PRE_ROUTING;
		dev = state->in;
	} else {
		pkt.hook = ICMPMON_HOOK_LOCAL_OUT;
		dev = state->out;
	}
	pkt.family = state->pf == NFPROTO_IPV4 ? ICMPMON_REC_FAMILY_IPV4 :
						 ICMPMON_REC_FAMILY_IPV6;
	pkt.skb = skb;
	pkt.ts_mono_ns = 0;		/* read once, for the first taker */
	pkt.ts_real_ns = 0;
	pkt.ifindex = dev ? dev->ifindex : 0;
	pkt.len = skb->len - skb_network_offset(skb);
	hook_bit = BIT(pkt.hook);
	family_bit = state->pf == NFPROTO_IPV4 ? ICMPMON_FAMILY_F_IPV4 :
						 ICMPMON_FAMILY_F_IPV6;

	/* nf_hook_slow() holds rcu_read_lock() for us. */
	for (i = 0; i < ICMPMON_SUBS_LIMIT; i++) {
		struct icmpmon_sub *sub = rcu_dereference(pn->subs[i]);

		if (!sub || !(sub->hook_mask & hook_bit) ||
		    !(sub->family_mask & family_bit))
			continue;
		if (!pkt.ts_mono_ns) {
			/* One clock read: the wall clock is an offset of it. */
			ktime_t mono = ktime_get();

			pkt.ts_mono_ns = ktime_to_ns(mono);
			pkt.ts_real_ns = ktime_to_ns(ktime_mono_to_real(mono));
		}
		icmpmon_sub_record(sub, &pkt);
	}
	return NF_ACCEPT;
}

/*
 * After defragmentation, so one ICMP message is one record.  LOCAL_OUT sees
 * a packet before SNAT and before rerouting by later hooks.
 */
static const struct nf_hook_ops icmpmon_nf_ops[] = {
	{
		.hook		= icmpmon_nf_hook,
		.pf		= NFPROTO_IPV4,
		.hooknum	= NF_INET_PRE_ROUTING,
		.priority	= NF_IP_PRI_CONNTRACK_DEFRAG + 1,
	},
	{
		.hook		= icmpmon_nf_hook,
		.pf		= NFPROTO_IPV4,
		.hooknum	= NF_INET_LOCAL_OUT,
		.priority	= NF_IP_PRI_CONNTRACK_DEFRAG + 1,
	},
	{
		.hook		= icmpmon_nf_hook,
		.pf		= NFPROTO_IPV6,
		.hooknum	= NF_INET_PRE_ROUTING,
		.priority	= NF_IP6_PRI_CONNTRACK_DEFRAG + 1,
	},
	{
		.hook		= icmpmon_nf_hook,
		.pf		= NFPROTO_IPV6,
		.hooknum	= NF_INET_LOCAL_OUT,
		.priority	= NF_IP6_PRI_CONNTRACK_DEFRAG + 1,
	},
};

/* The icmpmon_nf_ops[] a subscription's masks need, as bits. */
static u32 icmpmon_ops_of(u32 hook_mask, u32 family_mask)
{
	u32 ops = 0;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(icmpmon_nf_ops); i++) {
		const struct nf_hook_ops *o = &icmpmon_nf_ops[i];
		u32 fam = o->pf == NFPROTO_IPV4 ? ICMPMON_FAMILY_F_IPV4 :
						  ICMPMON_FAMILY_F_IPV6;
		u32 hook = o->hooknum == NF_INET_PRE_ROUTING ?
			   ICMPMON_HOOK_F_PRE_ROUTING : ICMPMON_HOOK_F_LOCAL_OUT;

		if ((family_mask & fam) && (hook_mask & hook))
			ops |= BIT(i);
	}
	return ops;
}

/* What the namespace's subscribers need together. */
static u32 icmpmon_ops_wanted(struct icmpmon_net *pn)
{
	u32 ops = 0;
	int i;

	lockdep_assert_held(&pn->lock);
	for (i = 0; i < ICMPMON_SUBS_LIMIT; i++) {
		const struct icmpmon_sub *sub = rcu_dereference_protected(
			pn->subs[i], lockdep_is_held(&pn->lock));

		if (sub)
			ops |= icmpmon_ops_of(sub->hook_mask, sub->family_mask);
	}
	return ops;
}

/*
 * Registers the hooks in @want and only those, each family's
 * defragmentation with its first hook: an idle module costs nothing per
 * packet, and an IPv4-only monitor leaves IPv6 alone.  Turning
 * defragmentation on changes forwarding in that namespace as conntrack
 * does: fragments are reassembled (and refragmented) on their way through.
 * On error nothing has changed.  Hooks still running after an unregister
 * finish under RCU; callers wait for a grace period before freeing
 * anything a hook can reach.
 */
static int icmpmon_hooks_set(struct icmpmon_net *pn, u32 want)
{
	u32 ops4 = icmpmon_ops_of(ICMPMON_HOOK_MASK_ALL, ICMPMON_FAMILY_F_IPV4);
	u32 ops6 = icmpmon_ops_of(ICMPMON_HOOK_MASK_ALL, ICMPMON_FAMILY_F_IPV6);
	u32 on = pn->ops_on;
	bool v4 = want & ops4, v4_on = on & ops4;
	bool v6 = want & ops6, v6_on = on & ops6;
	unsigned int i;
	int err;

	lockdep_assert_held(&pn->lock);
	if (v4 && !v4_on) {
		err = nf_defrag_ipv4_enable(pn->net);
		if (err)
			return err;
	}
	if (v6 && !v6_on) {
		err = nf_defrag_ipv6_enable(pn->net);
		if (err)
			goto err_v4;
	}
	for (i = 0; i < ARRAY_SIZE(icmpmon_nf_ops); i++) {
		if (!(want & ~on & BIT(i)))
			continue;
		err = nf_register_net_hook(pn->net, &icmpmon_nf_ops[i]);
		if (err)
			goto err_hooks;
		pn->ops_on |= BIT(i);
	}
	for (i = 0; i < ARRAY_SIZE(icmpmon_nf_ops); i++) {
		if (!(on & ~want & BIT(i)))
			continue;
		nf_unregister_net_hook(pn->net, &icmpmon_nf_ops[i]);
		pn->ops_on &= ~BIT(i);
	}
	if (v6_on && !v6)
		nf_defrag_ipv6_disable(pn->net);
	if (v4_on && !v4)
		nf_defrag_ipv4_disable(pn->net);
	return 0;

err_hooks:
	for (i = 0; i < ARRAY_SIZE(icmpmon_nf_ops); i++)
		if (pn->ops_on & ~on & BIT(i))
			nf_unregister_net_hook(pn->net, &icmpmon_nf_ops[i]);
	pn->ops_on = on;
	if (v6 && !v6_on)
		nf_defrag_ipv6_disable(pn->net);
err_v4:
	if (v4 && !v4_on)
		nf_defrag_ipv4_disable(pn->net);
	return err;
}

/* ---- subscriber table (pn->lock held) ---- */

static int icmpmon_sub_find(struct icmpmon_net *pn, u32 portid)
{
	int i;

	for (i = 0; i < ICMPMON_SUBS_LIMIT; i++) {
		struct icmpmon_sub *sub = rcu_dereference_protected(pn->subs[i],
				lockdep_is_held(&pn->lock));

		if (sub && sub->portid == portid)
			return i;
	}
	return -ENOENT;
}

/*
 * Whether the socket that sent @skb subscribes, without the namespace's
 * mutex.  Its socket, not only its portid: a closing subscriber's portid
 * may be bound by another process before URELEASE drops it.
 */
static bool icmpmon_sub_exists(struct icmpmon_net *pn,
			       const struct sk_buff *skb, u32 portid)
{
	struct icmpmon_sub *sub;
	bool found = false;
	int i;

	rcu_read_lock();
	for (i = 0; i < ICMPMON_SUBS_LIMIT && !found; i++) {
		sub = rcu_dereference(pn->subs[i]);
		found = sub && sub->portid == portid &&
			sub->sk == NETLINK_CB(skb).sk;
	}
	rcu_read_unlock();
	return found;
}

/*
 * What a subscription's end tells its reader (CLOSE's reply, BYE): losses
 * after the last delivered batch reach it no other way.
 */
struct icmpmon_tail {
	u64 seq;			/* SEQ the next batch would have had */
	u64 lost;			/* records lost since the last delivery */
	u64 seen;			/* records made for it in all */
};

#define ICMPMON_TAIL_SIZE (3 * nla_total_size_64bit(sizeof(u64)))

static int icmpmon_put_tail(struct sk_buff *skb, const struct icmpmon_tail *t)
{
	if (nla_put_u64_64bit(skb, ICMPMON_A_SEQ, t->seq, ICMPMON_A_PAD) ||
	    nla_put_u64_64bit(skb, ICMPMON_A_LOST, t->lost, ICMPMON_A_PAD) ||
	    nla_put_u64_64bit(skb, ICMPMON_A_SEEN, t->seen, ICMPMON_A_PAD))
		return -EMSGSIZE;
	return 0;
}

static void icmpmon_send_bye(struct icmpmon_sub *sub, u32 reason,
			     const struct icmpmon_tail *tail)
{
	struct sk_buff *skb;
	void *hdr;

	skb = genlmsg_new(nla_total_size(sizeof(u32)) + ICMPMON_TAIL_SIZE,
			  GFP_KERNEL);
	if (!skb)
		return;
	hdr = genlmsg_put(skb, 0, 0, &icmpmon_family, 0, ICMPMON_CMD_BYE);
	if (!hdr || nla_put_u32(skb, ICMPMON_A_BYE_REASON, reason) ||
	    icmpmon_put_tail(skb, tail)) {
		kfree_skb(skb);
		return;
	}
	genlmsg_end(skb, hdr);
	icmpmon_unicast(sub, skb);
}

/* A closed batch that is not sent: its records are lost. */
static void icmpmon_batch_drop(struct icmpmon_sub *sub, struct sk_buff *skb,
			       enum icmpmon_stat why)
{
	const struct icmpmon_batch_cb *cb = ICMPMON_BATCH_CB(skb);

	sub->lost += cb->unqueued + cb->nrecs;
	icmpmon_stat_add(sub->pn, why, cb->nrecs);
	kfree_skb(skb);
}

/* More than a tail message's truesize, whatever the allocator rounds to. */
#define ICMPMON_TAIL_TRUESIZE SKB_TRUESIZE(1024)

/*
 * Whether @skb can go with room left for the tail.  Netlink refuses a
 * message while the receive queue is over the socket's buffer, so a flush
 * that filled it would lose the tail, and with it the count of what the
 * flush lost; batches that do not fit are counted in the tail instead.  A
 * reader that empties its socket before CLOSE gets the tail unless the
 * hooks fill it again first (a flood still running).  Only the flush
 * keeps the room: in the hooks it would cost a batch whenever the reader
 * is behind.
 */
static bool icmpmon_room_for_tail(const struct sock *sk,
				  const struct sk_buff *skb)
{
	unsigned int queued = atomic_read(&sk->sk_rmem_alloc);

	return (u64)queued + skb->truesize + ICMPMON_TAIL_TRUESIZE <=
	       (unsigned int)READ_ONCE(sk->sk_rcvbuf);
}

enum icmpmon_unsub_how {
	ICMPMON_UNSUB_FLUSH,	/* CLOSE: deliver what is pending */
	ICMPMON_UNSUB_DISCARD,	/* socket released: nobody to deliver to */
	ICMPMON_UNSUB_BYE,	/* module going away: flush, then BYE */
};

/*
 * Takes slot @i out of the table, sends (or drops) what it still holds and
 * frees it.  Turns off the hooks no other subscriber needs.  Fills @tail
 * when given.  Sleeps.
 */
static void icmpmon_unsubscribe(struct icmpmon_net *pn, int i,
				enum icmpmon_unsub_how how,
				struct icmpmon_tail *tail)
{
	struct icmpmon_sub *sub = rcu_dereference_protected(pn->subs[i],
				lockdep_is_held(&pn->lock));
	struct icmpmon_tail t;
	struct sk_buff *skb;

	RCU_INIT_POINTER(pn->subs[i], NULL);
	WRITE_ONCE(pn->nsubs, pn->nsubs - 1);

	/* A hook that found @sub before the store sees dead and backs off. */
	spin_lock_bh(&sub->lock);
	sub->dead = true;
	if (sub->skb)
		icmpmon_batch_close(sub);
	spin_unlock_bh(&sub->lock);
	/* Nothing is queued from here on, nor is the timer armed again. */
	timer_delete_sync(&sub->timer);
	/*
	 * Take the sending over from a hook that may still be at it, and keep
	 * it: a hook still looking at @sub finds nothing left to do.
	 */
	while (test_and_set_bit_lock(ICMPMON_SUB_SENDING, &sub->flags))
		usleep_range(20, 100);
	while ((skb = skb_dequeue(&sub->out))) {
		if (how == ICMPMON_UNSUB_DISCARD)
			icmpmon_batch_drop(sub, skb, ICMPMON_STAT_LOST_CLOSED);
		else if (!icmpmon_room_for_tail(sub->sk, skb))
			icmpmon_batch_drop(sub, skb, ICMPMON_STAT_LOST_NOBUFS);
		else
			icmpmon_batch_send(sub, skb);
	}
	/* Dead, unsent and ours alone: nothing changes these any more. */
	t = (struct icmpmon_tail) {
		.seq = sub->seq,
		.lost = sub->lost + sub->unqueued,
		.seen = sub->seen,
	};
	if (tail)
		*tail = t;
	if (how == ICMPMON_UNSUB_BYE)
		icmpmon_send_bye(sub, ICMPMON_BYE_UNLOAD, &t);
	/* Only the hooks the others still need: fewer, so it cannot fail. */
	WARN_ON_ONCE(icmpmon_hooks_set(pn, icmpmon_ops_wanted(pn)));
	sock_put(sub->sk);
	kfree_rcu(sub, rcu);
}

/* Ends every subscription of a namespace and turns its hooks off. */
static void icmpmon_net_clear(struct net *net, enum icmpmon_unsub_how how)
{
	struct icmpmon_net *pn = icmpmon_pernet(net);
	int i;

	mutex_lock(&pn->lock);
	for (i = 0; i < ICMPMON_SUBS_LIMIT; i++)
		if (rcu_access_pointer(pn->subs[i]))
			icmpmon_unsubscribe(pn, i, how, NULL);
	icmpmon_hooks_set(pn, 0);
	mutex_unlock(&pn->lock);
}

/* ---- generic netlink commands ---- */

/*
 * nla_policy keeps min/max as s16: larger bounds need a full range.  Not
 * const because 6.1's policy points at it through a non-const pointer.
 */
static struct netlink_range_validation icmpmon_batch_range __ro_after_init = {
	.min = ICMPMON_BATCH_BYTES_MIN,
	.max = ICMPMON_BATCH_BYTES_MAX,
};

static const struct nla_policy icmpmon_register_policy[ICMPMON_A_MAX + 1] = {
	[ICMPMON_A_HOOK_MASK]	= NLA_POLICY_MASK(NLA_U32,
						  ICMPMON_HOOK_MASK_ALL),
	[ICMPMON_A_FAMILY_MASK]	= NLA_POLICY_MASK(NLA_U32,
						  ICMPMON_FAMILY_MASK_ALL),
	[ICMPMON_A_SNAPLEN]	= NLA_POLICY_RANGE(NLA_U32,
						   ICMPMON_SNAPLEN_MIN,
						   ICMPMON_SNAPLEN_MAX),
	[ICMPMON_A_BATCH_BYTES]	= NLA_POLICY_FULL_RANGE(NLA_U32,
							&icmpmon_batch_range),
	[ICMPMON_A_FLUSH_MS]	= NLA_POLICY_RANGE(NLA_U32,
						   ICMPMON_FLUSH_MS_MIN,
						   ICMPMON_FLUSH_MS_MAX),
};

/*
 * CLOSE and STATS take no attribute: with strict validation every entry
 * left NLA_UNSPEC is refused ("Unsupported attribute").
 */
static const struct nla_policy icmpmon_noattr_policy[ICMPMON_A_MAX + 1] = {};

/*
 * Who may subscribe and read STATS: CAP_NET_ADMIN in the initial user
 * namespace, held by the socket's opener and by the sender alike
 * (netlink_capable), so a socket handed to an unprivileged process carries
 * no right; root of the namespace's own user namespace only where the
 * administrator allows it.  A subscriber's packets cost the host softirq
 * time and GFP_ATOMIC memory charged to no one: an unprivileged user
 * (unshare -rn) must not be able to ask for them.
 */
static bool icmpmon_allowed(const struct sk_buff *skb, struct net *net)
{
	return netlink_capable(skb, CAP_NET_ADMIN) ||
	       (READ_ONCE(userns_subscribe) &&
		netlink_ns_capable(skb, net->user_ns, CAP_NET_ADMIN));
}

#define ICMPMON_PERM_MSG \
	"needs CAP_NET_ADMIN in the initial user namespace (module parameter userns_subscribe=1 admits root of a user namespace)"

static u32 icmpmon_attr_u32(struct genl_info *info, int type, u32 def)
{
	return info->attrs[type] ? nla_get_u32(info->attrs[type]) : def;
}

static int icmpmon_cmd_register(struct sk_buff *skb, struct genl_info *info)
{
	struct icmpmon_net *pn = icmpmon_pernet(genl_info_net(info));
	struct icmpmon_sub *sub;
	struct file *file;
	unsigned int i;
	int slot = -1, err;

	if (!icmpmon_allowed(skb, genl_info_net(info))) {
		NL_SET_ERR_MSG(info->extack, "REGISTER " ICMPMON_PERM_MSG);
		return -EPERM;
	}
	sub = kzalloc(sizeof(*sub), GFP_KERNEL);
	if (!sub) {
		NL_SET_ERR_MSG(info->extack, "out of memory");
		return -ENOMEM;
	}
	sub->pn = pn;
	sub->sk = NETLINK_CB(skb).sk;
	sub->portid = info->snd_portid;
	sub->hook_mask = icmpmon_attr_u32(info, ICMPMON_A_HOOK_MASK,
					  ICMPMON_HOOK_MASK_ALL);
	sub->family_mask = icmpmon_attr_u32(info, ICMPMON_A_FAMILY_MASK,
					    ICMPMON_FAMILY_MASK_ALL);
	sub->snaplen = icmpmon_attr_u32(info, ICMPMON_A_SNAPLEN,
					ICMPMON_SNAPLEN_DEFAULT);
	sub->batch_bytes = icmpmon_attr_u32(info, ICMPMON_A_BATCH_BYTES,
					    ICMPMON_BATCH_BYTES_DEFAULT);
	sub->flush_jiffies = max(1UL, msecs_to_jiffies(
		icmpmon_attr_u32(info, ICMPMON_A_FLUSH_MS,
				 ICMPMON_FLUSH_MS_DEFAULT)));
	spin_lock_init(&sub->lock);
	skb_queue_head_init(&sub->out);
	timer_setup(&sub->timer, icmpmon_sub_timer, 0);

	if (!sub->hook_mask) {
		NL_SET_ERR_MSG_ATTR(info->extack,
				    info->attrs[ICMPMON_A_HOOK_MASK],
				    "hook mask selects no hook");
		err = -EINVAL;
		goto err_free;
	}
	if (!sub->family_mask) {
		NL_SET_ERR_MSG_ATTR(info->extack,
				    info->attrs[ICMPMON_A_FAMILY_MASK],
				    "family mask selects no family");
		err = -EINVAL;
		goto err_free;
	}

	mutex_lock(&pn->lock);
	if (READ_ONCE(icmpmon_unloading)) {
		NL_SET_ERR_MSG(info->extack, "icmpmon module is unloading");
		err = -ESHUTDOWN;
		goto err_unlock;
	}
	/*
	 * The sender is inside sendmsg(), so its socket is open; this refuses
	 * kernel sockets, which have no file to hold.
	 */
	file = icmpmon_hold_file(sub->sk);
	if (!file) {
		NL_SET_ERR_MSG(info->extack, "only an open user socket can subscribe");
		err = -EINVAL;
		goto err_unlock;
	}
	fput(file);
	if (icmpmon_sub_find(pn, sub->portid) >= 0) {
		NL_SET_ERR_MSG(info->extack, "this socket is already registered");
		err = -EEXIST;
		goto err_unlock;
	}
	for (i = 0; i < max_subscribers; i++) {
		if (!rcu_access_pointer(pn->subs[i])) {
			slot = i;
			break;
		}
	}
	if (slot < 0) {
		NL_SET_ERR_MSG(info->extack,
			       "subscriber table full (module parameter max_subscribers)");
		err = -EBUSY;
		goto err_unlock;
	}
	err = icmpmon_hooks_set(pn, pn->ops_on |
				icmpmon_ops_of(sub->hook_mask, sub->family_mask));
	if (err) {
		NL_SET_ERR_MSG(info->extack, "cannot register netfilter hooks");
		goto err_unlock;
	}
	/* Released with the subscription; URELEASE comes before it dies. */
	sock_hold(sub->sk);
	WRITE_ONCE(pn->nsubs, pn->nsubs + 1);
	rcu_assign_pointer(pn->subs[slot], sub);
	mutex_unlock(&pn->lock);
	return 0;

err_unlock:
	mutex_unlock(&pn->lock);
err_free:
	kfree(sub);
	return err;
}

/*
 * The tail, as CLOSE's reply: sent before the ACK, after the last batch.
 * A reply that cannot be made or delivered leaves the reader with what
 * the batches said (the ACK goes all the same).
 */
static void icmpmon_reply_tail(struct genl_info *info,
			       const struct icmpmon_tail *tail)
{
	struct sk_buff *msg;
	void *hdr;

	msg = genlmsg_new(ICMPMON_TAIL_SIZE, GFP_KERNEL);
	if (!msg)
		return;
	hdr = genlmsg_put_reply(msg, info, &icmpmon_family, 0,
				ICMPMON_CMD_CLOSE);
	if (!hdr || icmpmon_put_tail(msg, tail)) {
		nlmsg_free(msg);
		return;
	}
	genlmsg_end(msg, hdr);
	genlmsg_reply(msg, info);
}

/* Ends the caller's own subscription: needs no privilege. */
static int icmpmon_cmd_close(struct sk_buff *skb, struct genl_info *info)
{
	struct icmpmon_net *pn = icmpmon_pernet(genl_info_net(info));
	struct icmpmon_tail tail = {};
	int i, err = 0;

	mutex_lock(&pn->lock);
	i = icmpmon_sub_find(pn, info->snd_portid);
	if (i >= 0) {
		/* Its last batch goes before the tail, both before the ACK. */
		icmpmon_unsubscribe(pn, i, ICMPMON_UNSUB_FLUSH, &tail);
	} else if (READ_ONCE(icmpmon_unloading)) {
		NL_SET_ERR_MSG(info->extack,
			       "icmpmon module is unloading: wait for BYE");
		err = -ESHUTDOWN;
	} else {
		NL_SET_ERR_MSG(info->extack, "this socket is not registered");
		err = -ENOENT;
	}
	mutex_unlock(&pn->lock);
	if (i >= 0)
		icmpmon_reply_tail(info, &tail);
	return err;
}

/*
 * Without pn->lock: a STATS loop must not hold up REGISTER or URELEASE.
 * The subscriber count is read once, so it may be a change behind.
 */
static int icmpmon_put_stats(struct sk_buff *skb, struct icmpmon_net *pn,
			     bool subscribed)
{
	u32 nsubs = READ_ONCE(pn->nsubs);
	u64 sum[__ICMPMON_STAT_MAX];
	int i;

	icmpmon_stats_read(pn, sum);
	for (i = 0; i < __ICMPMON_STAT_MAX; i++)
		if (nla_put_u64_64bit(skb, icmpmon_stat_names[i].attr, sum[i],
				      ICMPMON_A_PAD))
			return -EMSGSIZE;
	if (nla_put_u32(skb, ICMPMON_A_STAT_SUBSCRIBERS, nsubs) ||
	    nla_put_u32(skb, ICMPMON_A_STAT_SUBSCRIBED, subscribed))
		return -EMSGSIZE;
	return 0;
}

/*
 * The counters are /proc/net/icmpmon's (mode 0440): the same right as
 * REGISTER, or being a subscriber (which had it), whose liveness probe
 * asks after privileges are dropped.
 */
static int icmpmon_cmd_stats(struct sk_buff *skb, struct genl_info *info)
{
	struct net *net = genl_info_net(info);
	struct icmpmon_net *pn = icmpmon_pernet(net);
	struct sk_buff *msg;
	bool subscribed;
	void *hdr;

	subscribed = icmpmon_sub_exists(pn, skb, info->snd_portid);
	if (!subscribed && !icmpmon_allowed(skb, net)) {
		NL_SET_ERR_MSG(info->extack, "STATS " ICMPMON_PERM_MSG);
		return -EPERM;
	}
	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg) {
		NL_SET_ERR_MSG(info->extack, "out of memory");
		return -ENOMEM;
	}
	hdr = genlmsg_put_reply(msg, info, &icmpmon_family, 0,
				ICMPMON_CMD_STATS);
	if (!hdr || icmpmon_put_stats(msg, pn, subscribed)) {
		nlmsg_free(msg);
		NL_SET_ERR_MSG(info->extack, "STATS reply too large");
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
}

static const struct genl_ops icmpmon_ops[] = {
	{
		.cmd	 = ICMPMON_CMD_REGISTER,
		.doit	 = icmpmon_cmd_register,
		.policy	 = icmpmon_register_policy,
		.maxattr = ICMPMON_A_MAX,
		/* icmpmon_allowed(), with its own message. */
	},
	{
		.cmd	 = ICMPMON_CMD_CLOSE,
		.doit	 = icmpmon_cmd_close,
		.policy	 = icmpmon_noattr_policy,
		.maxattr = ICMPMON_A_MAX,
	},
	{
		.cmd	 = ICMPMON_CMD_STATS,
		.doit	 = icmpmon_cmd_stats,
		.policy	 = icmpmon_noattr_policy,
		.maxattr = ICMPMON_A_MAX,
	},
};

static struct genl_family icmpmon_family __ro_after_init = {
	.name		= ICMPMON_GENL_NAME,
	.version	= ICMPMON_GENL_VERSION,
	.netnsok	= true,
	/* Every handler serialises on its namespace's lock. */
	.parallel_ops	= true,
	.module		= THIS_MODULE,
	.ops		= icmpmon_ops,
	.n_ops		= ARRAY_SIZE(icmpmon_ops),
	/* Zero: header and attributes strictly validated for every op. */
	.resv_start_op	= 0,
};

/* ---- a socket closed without CLOSE (e.g. SIGKILL), unload included ---- */

static int icmpmon_netlink_event(struct notifier_block *nb,
				 unsigned long event, void *ptr)
{
	struct netlink_notify *n = ptr;
	struct icmpmon_net *pn;
	int i;

	if (event != NETLINK_URELEASE || n->protocol != NETLINK_GENERIC)
		return NOTIFY_DONE;

	pn = icmpmon_pernet(n->net);
	/*
	 * Every generic netlink socket of every namespace closes through
	 * here.  REGISTER runs inside its sender's sendmsg(), so a socket
	 * closing now has finished registering: no subscriber, no business.
	 */
	if (!READ_ONCE(pn->nsubs))
		return NOTIFY_DONE;
	mutex_lock(&pn->lock);
	i = icmpmon_sub_find(pn, n->portid);
	/* Its portid may be reused at once: never send to it again. */
	if (i >= 0)
		icmpmon_unsubscribe(pn, i, ICMPMON_UNSUB_DISCARD, NULL);
	mutex_unlock(&pn->lock);
	return NOTIFY_DONE;
}

static struct notifier_block icmpmon_netlink_notifier = {
	.notifier_call = icmpmon_netlink_event,
};

/* ---- /proc/net/icmpmon ---- */

static int icmpmon_proc_show(struct seq_file *m, void *v)
{
	struct icmpmon_net *pn = icmpmon_pernet(seq_file_single_net(m));
	u64 sum[__ICMPMON_STAT_MAX];
	int i;

	icmpmon_stats_read(pn, sum);
	for (i = 0; i < __ICMPMON_STAT_MAX; i++)
		seq_printf(m, "%s %llu\n", icmpmon_stat_names[i].name, sum[i]);
	seq_printf(m, "subscribers %u\n", READ_ONCE(pn->nsubs));
	return 0;
}

/* ---- per network namespace ---- */

static int __net_init icmpmon_net_init(struct net *net)
{
	struct icmpmon_net *pn = icmpmon_pernet(net);
	struct proc_dir_entry *proc;
	kuid_t root_uid;
	kgid_t root_gid;

	pn->net = net;
	mutex_init(&pn->lock);
	pn->stats = netdev_alloc_pcpu_stats(struct icmpmon_pcpu_stats);
	if (!pn->stats)
		return -ENOMEM;
	/* Like nfnetlink_log: readable by the namespace's root only. */
	proc = proc_create_net_single("icmpmon", 0440, net->proc_net,
				      icmpmon_proc_show, NULL);
	if (!proc) {
		free_percpu(pn->stats);
		return -ENOMEM;
	}
	root_uid = make_kuid(net->user_ns, 0);
	root_gid = make_kgid(net->user_ns, 0);
	if (uid_valid(root_uid) && gid_valid(root_gid))
		proc_set_user(proc, root_uid, root_gid);
	return 0;
}

/*
 * A subscriber's socket keeps its namespace alive and is unsubscribed by
 * URELEASE when it closes, so a dying namespace has none left; clear
 * defensively all the same.
 */
static void __net_exit icmpmon_net_pre_exit(struct net *net)
{
	icmpmon_net_clear(net, ICMPMON_UNSUB_DISCARD);
}

static void __net_exit icmpmon_net_exit(struct net *net)
{
	struct icmpmon_net *pn = icmpmon_pernet(net);

	remove_proc_entry("icmpmon", net->proc_net);
	free_percpu(pn->stats);
}

static struct pernet_operations icmpmon_net_ops = {
	.init		= icmpmon_net_init,
	.pre_exit	= icmpmon_net_pre_exit,
	.exit		= icmpmon_net_exit,
	.id		= &icmpmon_net_id,
	.size		= sizeof(struct icmpmon_net),
};

/* ---- module ---- */

static int __init icmpmon_init(void)
{
	int err;

	BUILD_BUG_ON(sizeof(struct icmpmon_batch_cb) >
		     sizeof_field(struct sk_buff, cb));
	BUILD_BUG_ON(sizeof(struct icmpmon_rec) != ICMPMON_REC_HDR_LEN_V2);
	BUILD_BUG_ON(sizeof(struct icmpmon_rec) % ICMPMON_REC_ALIGN);

	if (!max_subscribers || max_subscribers > ICMPMON_SUBS_LIMIT) {
		pr_err("max_subscribers must be 1-%d\n", ICMPMON_SUBS_LIMIT);
		return -EINVAL;
	}
	err = register_pernet_subsys(&icmpmon_net_ops);
	if (err)
		return err;
	err = netlink_register_notifier(&icmpmon_netlink_notifier);
	if (err)
		goto err_pernet;
	err = genl_register_family(&icmpmon_family);
	if (err)
		goto err_notifier;
	return 0;

err_notifier:
	netlink_unregister_notifier(&icmpmon_netlink_notifier);
err_pernet:
	unregister_pernet_subsys(&icmpmon_net_ops);
	return err;
}

static void __exit icmpmon_exit(void)
{
	struct icmpmon_net *pn, *next;
	LIST_HEAD(nets);
	struct net *net;

	/*
	 * From here on REGISTER is refused: it reads the flag under the
	 * namespace lock that the walk below takes after this store.
	 */
	WRITE_ONCE(icmpmon_unloading, true);

	/*
	 * Flush and say BYE to every subscriber while the family can still
	 * send.  URELEASE keeps working meanwhile, so a subscriber that dies
	 * now is dropped, never sent to.  The namespaces are gathered, each
	 * held, under net_rwsem and cleared after it is released: the sends
	 * and waits must not hold up namespace creation on the whole host.  A
	 * namespace created after the walk sees icmpmon_unloading (its
	 * creator takes net_rwsem for writing after our read side ends) and
	 * so never gets a subscriber.
	 */
	down_read(&net_rwsem);
	for_each_net(net)
		if (maybe_get_net(net))
			list_add_tail(&icmpmon_pernet(net)->unload, &nets);
	up_read(&net_rwsem);
	list_for_each_entry_safe(pn, next, &nets, unload) {
		list_del(&pn->unload);
		icmpmon_net_clear(pn->net, ICMPMON_UNSUB_BYE);
		put_net(pn->net);
	}

	/*
	 * The family goes first: no command can run once it is gone, so no
	 * handler ever sees the per-namespace state freed last.  (nfnetlink_log
	 * needs no such order: it pins itself while it has instances.)
	 */
	genl_unregister_family(&icmpmon_family);
	netlink_unregister_notifier(&icmpmon_netlink_notifier);
	unregister_pernet_subsys(&icmpmon_net_ops);
}

module_init(icmpmon_init);
module_exit(icmpmon_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("icmpmon developers");
MODULE_DESCRIPTION("ICMP/ICMPv6 monitor: netfilter hook with generic netlink records");
/*
 * No MODULE_ALIAS_GENL_FAMILY: resolving the family needs no privilege, so
 * the alias would let any user load the module.  The administrator loads
 * it (modprobe, modules-load.d).
 */

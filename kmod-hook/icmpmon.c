// SPDX-License-Identifier: GPL-2.0
/*
 * icmpmon: netfilter hooks that copy every ICMP and ICMPv6 packet into
 * compact records and unicast them in batches, over generic netlink, to the
 * processes that registered.  ABI: include/uapi/icmpmon.h.
 *
 * Locking:
 *  - icmpmon_mutex serialises every change to a namespace's subscriber
 *    table and its hook registration (REGISTER, CLOSE, URELEASE, pre_exit);
 *  - the hooks find subscribers under RCU (nf_hook_slow holds it);
 *  - sub->lock (BH-safe) guards a subscriber's batch, sequence and loss
 *    counters; batches are sent under it so SEQ order is delivery order.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
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
#include <linux/atomic.h>
#include <linux/rcupdate.h>
#include <linux/mutex.h>
#include <net/genetlink.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>
#include <net/ipv6.h>
#if IS_ENABLED(CONFIG_NF_DEFRAG_IPV4)
#include <net/netfilter/ipv4/nf_defrag_ipv4.h>
#endif
#if IS_ENABLED(CONFIG_NF_DEFRAG_IPV6)
#include <net/netfilter/ipv6/nf_defrag_ipv6.h>
#endif

#include "include/uapi/icmpmon.h"

#define ICMPMON_SUBS_LIMIT 16

static unsigned int max_subscribers = 8;
module_param(max_subscribers, uint, 0444);
MODULE_PARM_DESC(max_subscribers,
		 "subscribers per network namespace (1-16, default 8)");

struct icmpmon_net;

struct icmpmon_sub {
	struct icmpmon_net *pn;
	u32 portid;
	u32 hook_mask;
	u32 family_mask;
	u32 snaplen;
	u32 batch_bytes;
	unsigned long flush_jiffies;

	spinlock_t lock;		/* batch, seq, lost, dead */
	struct sk_buff *skb;		/* batch being filled, or NULL */
	void *hdr;			/* its genetlink header */
	struct nlattr *records;		/* its open ICMPMON_A_RECORDS */
	u32 nrecs;			/* records in it */
	u64 seq;			/* SEQ of the next batch */
	u64 lost;			/* records lost since the last delivery */
	bool dead;			/* unsubscribed: take no more records */

	struct timer_list timer;	/* flushes a partial batch */
	struct rcu_head rcu;
};

struct icmpmon_net {
	struct net *net;
	struct icmpmon_sub __rcu *subs[ICMPMON_SUBS_LIMIT];
	unsigned int nsubs;		/* icmpmon_mutex */
	bool hooks_on;			/* icmpmon_mutex */

	atomic64_t packets;
	atomic64_t seen;
	atomic64_t delivered;
	atomic64_t lost_nobufs;
	atomic64_t lost_nomem;
	atomic64_t lost_closed;
	atomic64_t truncated;
};

/* What the hook learned about one packet; shared by every subscriber. */
struct icmpmon_pkt {
	const struct sk_buff *skb;
	u64 ts_ns;
	u32 ifindex;
	u32 len;
	u8 family;
	u8 hook;
};

static unsigned int icmpmon_net_id __read_mostly;
static DEFINE_MUTEX(icmpmon_mutex);
static bool icmpmon_unloading;		/* icmpmon_mutex */
static struct genl_family icmpmon_family;

/* Room kept free at the end of a batch for the SEQ and LOST attributes. */
#define ICMPMON_BATCH_TRAILER (2 * nla_total_size_64bit(sizeof(u64)))

static struct icmpmon_net *icmpmon_pernet(const struct net *net)
{
	return net_generic(net, icmpmon_net_id);
}

static unsigned int icmpmon_rec_size(u32 caplen)
{
	return ALIGN(sizeof(struct icmpmon_rec) + caplen, ICMPMON_REC_ALIGN);
}

/* ---- batches (all with sub->lock held) ---- */

static int icmpmon_batch_open(struct icmpmon_sub *sub, unsigned int need)
{
	size_t min = NLA_HDRLEN + need + ICMPMON_BATCH_TRAILER;
	size_t want = max_t(size_t, sub->batch_bytes, min);
	struct sk_buff *skb;

	skb = genlmsg_new(want, GFP_ATOMIC | __GFP_NOWARN);
	if (!skb && want > min)
		skb = genlmsg_new(min, GFP_ATOMIC | __GFP_NOWARN);
	if (!skb)
		return -ENOMEM;

	sub->hdr = genlmsg_put(skb, 0, 0, &icmpmon_family, 0,
			       ICMPMON_CMD_RECORDS);
	if (!sub->hdr) {
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
	sub->skb = skb;
	sub->nrecs = 0;
	return 0;
}

static bool icmpmon_batch_fits(const struct icmpmon_sub *sub,
			       unsigned int need)
{
	const struct sk_buff *skb = sub->skb;
	size_t attr_len = skb_tail_pointer(skb) - (unsigned char *)sub->records;

	return skb_tailroom(skb) >= need + ICMPMON_BATCH_TRAILER &&
	       attr_len + need <= U16_MAX;
}

/* Send the open batch, if any.  Never sleeps. */
static void icmpmon_batch_send(struct icmpmon_sub *sub)
{
	struct icmpmon_net *pn = sub->pn;
	struct sk_buff *skb = sub->skb;
	u32 n = sub->nrecs;
	int err;

	if (!skb)
		return;
	sub->skb = NULL;
	sub->nrecs = 0;

	sub->records->nla_len = skb_tail_pointer(skb) -
				(unsigned char *)sub->records;
	if (nla_put_u64_64bit(skb, ICMPMON_A_SEQ, sub->seq, ICMPMON_A_PAD) ||
	    nla_put_u64_64bit(skb, ICMPMON_A_LOST, sub->lost, ICMPMON_A_PAD)) {
		/* Cannot happen: the trailer room was kept free. */
		WARN_ON_ONCE(1);
		kfree_skb(skb);
		sub->lost += n;
		atomic64_add(n, &pn->lost_nomem);
		return;
	}
	genlmsg_end(skb, sub->hdr);
	sub->seq++;

	/* Non-blocking; the skb is consumed either way. */
	err = genlmsg_unicast(pn->net, skb, sub->portid);
	if (err) {
		sub->lost += n;
		atomic64_add(n, &pn->lost_nobufs);
	} else {
		sub->lost = 0;
		atomic64_add(n, &pn->delivered);
	}
}

/* Drop the open batch without sending it (its socket is gone). */
static void icmpmon_batch_discard(struct icmpmon_sub *sub)
{
	if (!sub->skb)
		return;
	atomic64_add(sub->nrecs, &sub->pn->lost_closed);
	kfree_skb(sub->skb);
	sub->skb = NULL;
	sub->nrecs = 0;
}

static void icmpmon_sub_timer(struct timer_list *t)
{
	struct icmpmon_sub *sub = from_timer(sub, t, timer);

	spin_lock_bh(&sub->lock);
	if (!sub->dead)
		icmpmon_batch_send(sub);
	spin_unlock_bh(&sub->lock);
}

static void icmpmon_sub_record(struct icmpmon_sub *sub,
			       const struct icmpmon_pkt *pkt)
{
	struct icmpmon_net *pn = sub->pn;
	u32 caplen = min(pkt->len, sub->snaplen);
	unsigned int need = icmpmon_rec_size(caplen);
	struct icmpmon_rec *rec;

	spin_lock_bh(&sub->lock);
	if (sub->dead)
		goto out;
	atomic64_inc(&pn->seen);

	if (sub->skb && !icmpmon_batch_fits(sub, need))
		icmpmon_batch_send(sub);
	if (!sub->skb) {
		if (icmpmon_batch_open(sub, need)) {
			sub->lost++;
			atomic64_inc(&pn->lost_nomem);
			goto out;
		}
		mod_timer(&sub->timer, jiffies + sub->flush_jiffies);
	}

	rec = skb_put(sub->skb, need);
	memset(rec, 0, sizeof(*rec));
	rec->ts_ns = pkt->ts_ns;
	rec->ifindex = pkt->ifindex;
	rec->caplen = caplen;
	rec->origlen = min_t(u32, pkt->len, U16_MAX);
	rec->family = pkt->family;
	rec->hook = pkt->hook;
	if (caplen < pkt->len) {
		rec->flags |= ICMPMON_REC_F_TRUNCATED;
		atomic64_inc(&pn->truncated);
	}
	if (skb_copy_bits(pkt->skb, skb_network_offset(pkt->skb), rec + 1,
			  caplen))
		memset(rec + 1, 0, caplen);	/* cannot happen: len checked */
	memset((u8 *)(rec + 1) + caplen, 0,
	       need - sizeof(*rec) - caplen);
	sub->nrecs++;
out:
	spin_unlock_bh(&sub->lock);
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
		 * A non-first fragment carries no ICMP header; after
		 * defragmentation only a fragment that could not be
		 * reassembled gets here.
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
	atomic64_inc(&pn->packets);

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
	pkt.ts_ns = ktime_get_real_ns();
	pkt.ifindex = dev ? dev->ifindex : 0;
	pkt.len = skb->len - skb_network_offset(skb);
	hook_bit = BIT(pkt.hook);
	family_bit = state->pf == NFPROTO_IPV4 ? ICMPMON_FAMILY_F_IPV4 :
						 ICMPMON_FAMILY_F_IPV6;

	/* nf_hook_slow() holds rcu_read_lock() for us. */
	for (i = 0; i < ICMPMON_SUBS_LIMIT; i++) {
		struct icmpmon_sub *sub = rcu_dereference(pn->subs[i]);

		if (sub && (sub->hook_mask & hook_bit) &&
		    (sub->family_mask & family_bit))
			icmpmon_sub_record(sub, &pkt);
	}
	return NF_ACCEPT;
}

/* After defragmentation, so one ICMP message is one record. */
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

/*
 * Hooks (and defragmentation) are on in a namespace only while it has
 * subscribers, so an idle module costs nothing per packet.
 */
static int icmpmon_hooks_on(struct icmpmon_net *pn)
{
	int err;

	lockdep_assert_held(&icmpmon_mutex);
	if (pn->hooks_on)
		return 0;
#if IS_ENABLED(CONFIG_NF_DEFRAG_IPV4)
	err = nf_defrag_ipv4_enable(pn->net);
	if (err)
		return err;
#endif
#if IS_ENABLED(CONFIG_NF_DEFRAG_IPV6)
	err = nf_defrag_ipv6_enable(pn->net);
	if (err)
		goto err_v4;
#endif
	err = nf_register_net_hooks(pn->net, icmpmon_nf_ops,
				    ARRAY_SIZE(icmpmon_nf_ops));
	if (err)
		goto err_v6;
	pn->hooks_on = true;
	return 0;

err_v6:
#if IS_ENABLED(CONFIG_NF_DEFRAG_IPV6)
	nf_defrag_ipv6_disable(pn->net);
err_v4:
#endif
#if IS_ENABLED(CONFIG_NF_DEFRAG_IPV4)
	nf_defrag_ipv4_disable(pn->net);
#endif
	return err;
}

static void icmpmon_hooks_off(struct icmpmon_net *pn)
{
	lockdep_assert_held(&icmpmon_mutex);
	if (!pn->hooks_on)
		return;
	/* Returns after every running hook has finished. */
	nf_unregister_net_hooks(pn->net, icmpmon_nf_ops,
				ARRAY_SIZE(icmpmon_nf_ops));
#if IS_ENABLED(CONFIG_NF_DEFRAG_IPV6)
	nf_defrag_ipv6_disable(pn->net);
#endif
#if IS_ENABLED(CONFIG_NF_DEFRAG_IPV4)
	nf_defrag_ipv4_disable(pn->net);
#endif
	pn->hooks_on = false;
}

/* ---- subscriber table (icmpmon_mutex held) ---- */

static int icmpmon_sub_find(struct icmpmon_net *pn, u32 portid)
{
	int i;

	for (i = 0; i < ICMPMON_SUBS_LIMIT; i++) {
		struct icmpmon_sub *sub = rcu_dereference_protected(pn->subs[i],
				lockdep_is_held(&icmpmon_mutex));

		if (sub && sub->portid == portid)
			return i;
	}
	return -ENOENT;
}

static void icmpmon_send_bye(struct icmpmon_sub *sub, u32 reason)
{
	struct sk_buff *skb;
	void *hdr;

	skb = genlmsg_new(nla_total_size(sizeof(u32)), GFP_KERNEL);
	if (!skb)
		return;
	hdr = genlmsg_put(skb, 0, 0, &icmpmon_family, 0, ICMPMON_CMD_BYE);
	if (!hdr || nla_put_u32(skb, ICMPMON_A_BYE_REASON, reason)) {
		kfree_skb(skb);
		return;
	}
	genlmsg_end(skb, hdr);
	genlmsg_unicast(sub->pn->net, skb, sub->portid);
}

enum icmpmon_unsub_how {
	ICMPMON_UNSUB_FLUSH,	/* CLOSE: deliver what is pending */
	ICMPMON_UNSUB_DISCARD,	/* socket released: nobody to deliver to */
	ICMPMON_UNSUB_BYE,	/* kernel side going away: flush, then BYE */
};

/*
 * Take slot @i out of the table and free its subscriber once no hook can
 * still see it.  Turns the hooks off with the last subscriber.
 */
static void icmpmon_unsubscribe(struct icmpmon_net *pn, int i,
				enum icmpmon_unsub_how how, u32 reason)
{
	struct icmpmon_sub *sub = rcu_dereference_protected(pn->subs[i],
				lockdep_is_held(&icmpmon_mutex));

	RCU_INIT_POINTER(pn->subs[i], NULL);
	WRITE_ONCE(pn->nsubs, pn->nsubs - 1);	/* read locklessly by /proc */

	/* A hook that found @sub before the store sees dead and backs off. */
	spin_lock_bh(&sub->lock);
	sub->dead = true;
	if (how == ICMPMON_UNSUB_DISCARD)
		icmpmon_batch_discard(sub);
	else
		icmpmon_batch_send(sub);
	spin_unlock_bh(&sub->lock);
	timer_delete_sync(&sub->timer);

	if (how == ICMPMON_UNSUB_BYE)
		icmpmon_send_bye(sub, reason);
	if (!pn->nsubs)
		icmpmon_hooks_off(pn);
	kfree_rcu(sub, rcu);
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

static const struct nla_policy icmpmon_policy[ICMPMON_A_MAX + 1] = {
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
	/* Kernel -> user only: refused if a request carries them. */
	[ICMPMON_A_SEQ]		= { .type = NLA_REJECT },
	[ICMPMON_A_LOST]	= { .type = NLA_REJECT },
	[ICMPMON_A_RECORDS]	= { .type = NLA_REJECT },
	[ICMPMON_A_BYE_REASON]	= { .type = NLA_REJECT },
};

static u32 icmpmon_attr_u32(struct genl_info *info, int type, u32 def)
{
	return info->attrs[type] ? nla_get_u32(info->attrs[type]) : def;
}

static int icmpmon_cmd_register(struct sk_buff *skb, struct genl_info *info)
{
	struct icmpmon_net *pn = icmpmon_pernet(genl_info_net(info));
	struct icmpmon_sub *sub;
	unsigned int i;
	int slot = -1, err;

	sub = kzalloc(sizeof(*sub), GFP_KERNEL);
	if (!sub)
		return -ENOMEM;
	sub->pn = pn;
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

	mutex_lock(&icmpmon_mutex);
	if (icmpmon_unloading) {
		NL_SET_ERR_MSG(info->extack, "icmpmon module is unloading");
		err = -ESHUTDOWN;
		goto err_unlock;
	}
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
	err = icmpmon_hooks_on(pn);
	if (err) {
		NL_SET_ERR_MSG(info->extack, "cannot register netfilter hooks");
		goto err_unlock;
	}
	WRITE_ONCE(pn->nsubs, pn->nsubs + 1);
	rcu_assign_pointer(pn->subs[slot], sub);
	mutex_unlock(&icmpmon_mutex);
	return 0;

err_unlock:
	mutex_unlock(&icmpmon_mutex);
err_free:
	kfree(sub);
	return err;
}

static int icmpmon_cmd_close(struct sk_buff *skb, struct genl_info *info)
{
	struct icmpmon_net *pn = icmpmon_pernet(genl_info_net(info));
	int i, err = 0;

	mutex_lock(&icmpmon_mutex);
	if (icmpmon_unloading) {
		/* pre_exit flushes and says BYE to every subscriber. */
		err = -ESHUTDOWN;
		goto out;
	}
	i = icmpmon_sub_find(pn, info->snd_portid);
	if (i < 0) {
		NL_SET_ERR_MSG(info->extack, "this socket is not registered");
		err = -ENOENT;
		goto out;
	}
	/* The last batch reaches the socket before the ACK of this CLOSE. */
	icmpmon_unsubscribe(pn, i, ICMPMON_UNSUB_FLUSH, 0);
out:
	mutex_unlock(&icmpmon_mutex);
	return err;
}

/* The namespace counters, for STATS and /proc/net/icmpmon alike. */
static const struct {
	int attr;
	const char *name;
	size_t offset;
} icmpmon_counters[] = {
#define ICMPMON_COUNTER(a, f) { a, #f, offsetof(struct icmpmon_net, f) }
	ICMPMON_COUNTER(ICMPMON_A_STAT_PACKETS, packets),
	ICMPMON_COUNTER(ICMPMON_A_STAT_SEEN, seen),
	ICMPMON_COUNTER(ICMPMON_A_STAT_DELIVERED, delivered),
	ICMPMON_COUNTER(ICMPMON_A_STAT_LOST_NOBUFS, lost_nobufs),
	ICMPMON_COUNTER(ICMPMON_A_STAT_LOST_NOMEM, lost_nomem),
	ICMPMON_COUNTER(ICMPMON_A_STAT_LOST_CLOSED, lost_closed),
	ICMPMON_COUNTER(ICMPMON_A_STAT_TRUNCATED, truncated),
#undef ICMPMON_COUNTER
};

static s64 icmpmon_counter(struct icmpmon_net *pn, int i)
{
	return atomic64_read((atomic64_t *)((u8 *)pn + icmpmon_counters[i].offset));
}

static int icmpmon_put_stats(struct sk_buff *skb, struct icmpmon_net *pn,
			     u32 nsubs)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(icmpmon_counters); i++)
		if (nla_put_u64_64bit(skb, icmpmon_counters[i].attr,
				      icmpmon_counter(pn, i), ICMPMON_A_PAD))
			return -EMSGSIZE;
	return nla_put_u32(skb, ICMPMON_A_STAT_SUBSCRIBERS, nsubs);
}

static int icmpmon_cmd_stats(struct sk_buff *skb, struct genl_info *info)
{
	struct icmpmon_net *pn = icmpmon_pernet(genl_info_net(info));
	struct sk_buff *msg;
	unsigned int nsubs;
	void *hdr;

	mutex_lock(&icmpmon_mutex);
	nsubs = pn->nsubs;
	mutex_unlock(&icmpmon_mutex);

	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &icmpmon_family, 0,
				ICMPMON_CMD_STATS);
	if (!hdr || icmpmon_put_stats(msg, pn, nsubs)) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
}

static const struct genl_small_ops icmpmon_ops[] = {
	{
		.cmd	= ICMPMON_CMD_REGISTER,
		.doit	= icmpmon_cmd_register,
		.flags	= GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd	= ICMPMON_CMD_CLOSE,
		.doit	= icmpmon_cmd_close,
		.flags	= GENL_UNS_ADMIN_PERM,
	},
	{
		/* Counters only: readable without privileges, like /proc. */
		.cmd	= ICMPMON_CMD_STATS,
		.doit	= icmpmon_cmd_stats,
	},
};

static struct genl_family icmpmon_family __ro_after_init = {
	.name		= ICMPMON_GENL_NAME,
	.version	= ICMPMON_GENL_VERSION,
	.maxattr	= ICMPMON_A_MAX,
	.policy		= icmpmon_policy,
	.netnsok	= true,
	.module		= THIS_MODULE,
	.small_ops	= icmpmon_ops,
	.n_small_ops	= ARRAY_SIZE(icmpmon_ops),
	/* Zero: header and attributes strictly validated for every op. */
	.resv_start_op	= 0,
};

/* ---- a socket closed without CLOSE (e.g. SIGKILL) ---- */

static int icmpmon_netlink_event(struct notifier_block *nb,
				 unsigned long event, void *ptr)
{
	struct netlink_notify *n = ptr;
	struct icmpmon_net *pn;
	int i;

	if (event != NETLINK_URELEASE || n->protocol != NETLINK_GENERIC)
		return NOTIFY_DONE;

	mutex_lock(&icmpmon_mutex);
	if (!icmpmon_unloading) {
		pn = icmpmon_pernet(n->net);
		i = icmpmon_sub_find(pn, n->portid);
		/* Its portid may be reused at once: never send to it again. */
		if (i >= 0)
			icmpmon_unsubscribe(pn, i, ICMPMON_UNSUB_DISCARD, 0);
	}
	mutex_unlock(&icmpmon_mutex);
	return NOTIFY_DONE;
}

static struct notifier_block icmpmon_netlink_notifier = {
	.notifier_call = icmpmon_netlink_event,
};

/* ---- /proc/net/icmpmon ---- */

static int icmpmon_proc_show(struct seq_file *m, void *v)
{
	struct icmpmon_net *pn = icmpmon_pernet(seq_file_single_net(m));
	int i;

	for (i = 0; i < ARRAY_SIZE(icmpmon_counters); i++)
		seq_printf(m, "%s %lld\n", icmpmon_counters[i].name,
			   icmpmon_counter(pn, i));
	seq_printf(m, "subscribers %u\n", READ_ONCE(pn->nsubs));
	return 0;
}

/* ---- per network namespace ---- */

static int __net_init icmpmon_net_init(struct net *net)
{
	struct icmpmon_net *pn = icmpmon_pernet(net);

	pn->net = net;
	if (!proc_create_net_single("icmpmon", 0444, net->proc_net,
				    icmpmon_proc_show, NULL))
		return -ENOMEM;
	return 0;
}

static void __net_exit icmpmon_net_pre_exit(struct net *net)
{
	struct icmpmon_net *pn = icmpmon_pernet(net);
	u32 reason;
	int i;

	mutex_lock(&icmpmon_mutex);
	reason = icmpmon_unloading ? ICMPMON_BYE_UNLOAD : ICMPMON_BYE_NETNS_EXIT;
	for (i = 0; i < ICMPMON_SUBS_LIMIT; i++)
		if (rcu_access_pointer(pn->subs[i]))
			icmpmon_unsubscribe(pn, i, ICMPMON_UNSUB_BYE, reason);
	icmpmon_hooks_off(pn);
	mutex_unlock(&icmpmon_mutex);
}

static void __net_exit icmpmon_net_exit(struct net *net)
{
	remove_proc_entry("icmpmon", net->proc_net);
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
	/* From here on REGISTER, CLOSE and URELEASE leave the tables alone. */
	mutex_lock(&icmpmon_mutex);
	icmpmon_unloading = true;
	mutex_unlock(&icmpmon_mutex);

	/* Flushes, says BYE (the family is still registered), unhooks. */
	unregister_pernet_subsys(&icmpmon_net_ops);
	netlink_unregister_notifier(&icmpmon_netlink_notifier);
	genl_unregister_family(&icmpmon_family);
}

module_init(icmpmon_init);
module_exit(icmpmon_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("icmpmon developers");
MODULE_DESCRIPTION("ICMP/ICMPv6 monitor: netfilter hook with generic netlink records");
MODULE_ALIAS_GENL_FAMILY(ICMPMON_GENL_NAME);

// SPDX-License-Identifier: GPL-2.0
/*
 * vmhelper: small tools the VM scenarios need and Debian's busybox lacks.
 * Built with gcc -static and put into the test initramfs.
 *
 *   vmhelper flood ADDR SECONDS   ICMP echo ping-pong as fast as replies come
 *   vmhelper udp ADDR PORT        one UDP datagram (to a closed port)
 *   vmhelper runas UID CMD...     drop to UID/GID (no capabilities) and exec
 *   vmhelper hold N SECONDS [FAMILIES]
 *                                 REGISTER N sockets with icmpmon (with
 *                                 FAMILY_MASK FAMILIES when given), then sleep
 *   vmhelper badmsg               malformed netlink battery (error acks only)
 *   vmhelper statsloop STOPFILE   STATS as fast as answered, through module
 *                                 unloads, until STOPFILE exists; fails on
 *                                 a freed-memory value
 *   vmhelper nschurn STOPFILE     network namespaces, each with a subscriber
 *                                 and some ICMP, created and destroyed
 *   vmhelper steal TRIALS         a subscriber SIGKILLed as rmmod starts while
 *                                 an unprivileged socket binds its portid:
 *                                 that socket must receive nothing
 *   vmhelper policy [userns]      as the caller (with "userns": as root of a
 *                                 new user and network namespace), print
 *                                 what resolving the family, REGISTER and
 *                                 STATS answer: "family=0 register=E stats=E"
 *   vmhelper records SECONDS      a C reader: REGISTER, cast the records
 *                                 (8-byte aligned), print one CSV line each
 *   vmhelper pty OUT GO KEYS CMD...
 *                                 run CMD on a 120x40 pseudo-terminal, copy
 *                                 its screen output to OUT, type KEYS once
 *                                 the file GO exists; exit with CMD's status
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../kmod-hook/include/uapi/icmpmon.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint16_t csum(const void *data, size_t len)
{
	const uint16_t *p = data;
	uint32_t sum = 0;

	for (; len > 1; len -= 2)
		sum += *p++;
	if (len)
		sum += *(const uint8_t *)p;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static int cmd_flood(const char *addr, double seconds)
{
	struct sockaddr_in dst = { .sin_family = AF_INET };
	unsigned long sent = 0, received = 0, timeouts = 0;
	uint16_t id = (uint16_t)getpid();
	double start, end;
	int fd;

	if (inet_pton(AF_INET, addr, &dst.sin_addr) != 1)
		return fprintf(stderr, "flood: bad IPv4 address %s\n", addr), 2;
	fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	if (fd < 0)
		return perror("flood: socket"), 1;

	start = now();
	end = start + seconds;
	while (now() < end) {
		struct icmphdr req = { .type = ICMP_ECHO };
		char buf[256];
		int matched = 0;

		req.un.echo.id = htons(id);
		req.un.echo.sequence = htons((uint16_t)sent);
		req.checksum = csum(&req, sizeof(req));
		if (sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&dst,
			   sizeof(dst)) < 0)
			return perror("flood: sendto"), 1;
		sent++;
		/* The raw socket also sees our own request on lo: skip it. */
		while (!matched) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			struct icmphdr *rep;
			ssize_t n;
			int ihl;

			if (poll(&pfd, 1, 100) <= 0) {
				timeouts++;
				break;
			}
			n = recv(fd, buf, sizeof(buf), 0);
			if (n < 20)
				continue;
			ihl = (buf[0] & 0xf) * 4;
			if (n < ihl + (ssize_t)sizeof(*rep))
				continue;
			rep = (struct icmphdr *)(buf + ihl);
			if (rep->type == ICMP_ECHOREPLY && rep->un.echo.id == htons(id) &&
			    rep->un.echo.sequence == htons((uint16_t)(sent - 1))) {
				received++;
				matched = 1;
			}
		}
	}
	seconds = now() - start;
	printf("flood sent=%lu received=%lu timeouts=%lu seconds=%.3f rate=%.0f\n",
	       sent, received, timeouts, seconds, sent / seconds);
	return 0;
}

static int cmd_udp(const char *addr, int port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t len;
	int fd;

	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		len = sizeof(*sin6);
	} else {
		return fprintf(stderr, "udp: bad address %s\n", addr), 2;
	}
	fd = socket(ss.ss_family, SOCK_DGRAM, 0);
	if (fd < 0 || sendto(fd, "icmpmon", 7, 0, (struct sockaddr *)&ss, len) < 0)
		return perror("udp"), 1;
	close(fd);
	return 0;
}

static int cmd_runas(int uid, char **argv)
{
	if (setgroups(0, NULL) || setgid(uid) || setuid(uid))
		return perror("runas"), 1;
	execvp(argv[0], argv);
	perror("runas: exec");
	return 127;
}

/* ---- generic netlink ---- */

struct nlreq {
	struct nlmsghdr nlh;
	struct genlmsghdr genl;
	char attrs[256];
};

static int nl_open(void)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	int one = 1, fd;

	fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		return -1;
	setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	return fd;
}

static void put_attr(struct nlreq *r, int type, const void *data, int len)
{
	struct nlattr *a = (struct nlattr *)((char *)r + NLMSG_ALIGN(r->nlh.nlmsg_len));

	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + len;
	memcpy((char *)a + NLA_HDRLEN, data, len);
	r->nlh.nlmsg_len = NLMSG_ALIGN(r->nlh.nlmsg_len) + NLA_ALIGN(a->nla_len);
}

static void init_req(struct nlreq *r, int type, int cmd)
{
	static unsigned int seq;

	memset(r, 0, sizeof(*r));
	r->nlh.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
	r->nlh.nlmsg_type = type;
	r->nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	r->nlh.nlmsg_seq = ++seq;
	r->genl.cmd = cmd;
	r->genl.version = ICMPMON_GENL_VERSION;
}

/*
 * Sends r (nlmsg_len bytes, or len if given) and returns the error of its
 * ACK (0 or -errno), copying the extack message into msg.  Other messages
 * (a family reply) are stored in reply when given.
 */
static int transact(int fd, struct nlreq *r, size_t len, char *msg, size_t msglen,
		    char *reply, size_t replylen)
{
	char buf[16384];

	if (msg)
		msg[0] = 0;
	if (send(fd, r, len ? len : r->nlh.nlmsg_len, 0) < 0)
		return -errno;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		struct nlmsghdr *h;
		ssize_t n;

		if (poll(&pfd, 1, 3000) <= 0)
			return -ETIMEDOUT;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0)
			return -errno;
		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			struct nlmsgerr *e;
			struct nlattr *a;
			int off, end;

			if (h->nlmsg_seq != r->nlh.nlmsg_seq)
				continue;
			if (h->nlmsg_type != NLMSG_ERROR) {
				if (reply)
					memcpy(reply, h, h->nlmsg_len < replylen ? h->nlmsg_len : replylen);
				continue;
			}
			e = NLMSG_DATA(h);
			/* Capped ack: the request's header, then extack TLVs. */
			off = NLMSG_HDRLEN + sizeof(*e);
			end = h->nlmsg_len;
			while (msg && (h->nlmsg_flags & NLM_F_ACK_TLVS) && off + NLA_HDRLEN <= end) {
				a = (struct nlattr *)((char *)h + off);
				if (a->nla_len < NLA_HDRLEN || off + a->nla_len > end)
					break;
				if (a->nla_type == NLMSGERR_ATTR_MSG)
					snprintf(msg, msglen, "%.*s", a->nla_len - NLA_HDRLEN,
						 (char *)a + NLA_HDRLEN);
				off += NLA_ALIGN(a->nla_len);
			}
			return e->error;
		}
	}
}

/*
 * The next attribute of a message of len bytes at *off, checked to lie
 * wholly inside it; NULL at the end or at a malformed attribute.
 */
static struct nlattr *next_attr(const char *msg, int len, int *off)
{
	struct nlattr *a = (struct nlattr *)(msg + *off);

	if (*off + NLA_HDRLEN > len || a->nla_len < NLA_HDRLEN || *off + a->nla_len > len)
		return NULL;
	*off += NLA_ALIGN(a->nla_len);
	return a;
}

/* The length of a copied reply: its own, but no more than was copied. */
static int reply_len(const struct nlmsghdr *h, size_t copied)
{
	return h->nlmsg_len < copied ? (int)h->nlmsg_len : (int)copied;
}

static int family_id(int fd)
{
	char reply[4096];
	struct nlmsghdr *h = (struct nlmsghdr *)reply;
	struct nlreq r;
	int off, err;

	init_req(&r, GENL_ID_CTRL, CTRL_CMD_GETFAMILY);
	put_attr(&r, CTRL_ATTR_FAMILY_NAME, ICMPMON_GENL_NAME, sizeof(ICMPMON_GENL_NAME));
	memset(reply, 0, sizeof(reply));
	err = transact(fd, &r, 0, NULL, 0, reply, sizeof(reply));
	if (err)
		return err;
	off = NLMSG_HDRLEN + GENL_HDRLEN;
	for (struct nlattr *a; (a = next_attr(reply, reply_len(h, sizeof(reply)), &off));)
		if (a->nla_type == CTRL_ATTR_FAMILY_ID && a->nla_len >= NLA_HDRLEN + 2)
			return *(uint16_t *)((char *)a + NLA_HDRLEN);
	return -ENOENT;
}

static int cmd_hold(int n, int seconds, uint32_t families)
{
	int i;

	for (i = 0; i < n; i++) {
		char msg[256];
		struct nlreq r;
		int fd = nl_open(), fam, err;

		fam = fd < 0 ? -errno : family_id(fd);
		if (fam < 0)
			return fprintf(stderr, "hold: family: %s\n", strerror(-fam)), 1;
		init_req(&r, fam, ICMPMON_CMD_REGISTER);
		if (families)
			put_attr(&r, ICMPMON_A_FAMILY_MASK, &families, sizeof(families));
		err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
		if (err)
			return fprintf(stderr, "hold: REGISTER %d: %s %s\n", i, strerror(-err), msg), 1;
	}
	printf("held %d\n", n);
	fflush(stdout);
	sleep(seconds);
	return 0;
}

/*
 * The kernel must answer with -expect, and its extack must contain
 * want (when given).
 */
static int check(const char *name, int expect, const char *want, int err,
		 const char *msg)
{
	int ok = err == -expect && (!want || strstr(msg, want));

	printf("badmsg %-22s %s error=%d (%s) extack=\"%s\"\n", name,
	       ok ? "ok" : "UNEXPECTED", err, strerror(-err), msg);
	return ok ? 0 : 1;
}

static int cmd_badmsg(void)
{
	char msg[256];
	struct nlreq r;
	int fd = nl_open(), fam, bad = 0, err;
	uint32_t u32;
	uint16_t u16;

	if (fd < 0 || (fam = family_id(fd)) < 0)
		return fprintf(stderr, "badmsg: no icmpmon family\n"), 1;

	/* A message too short to hold the generic netlink header. */
	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	r.nlh.nlmsg_len = NLMSG_HDRLEN + 2;
	err = transact(fd, &r, NLMSG_HDRLEN + 4, msg, sizeof(msg), NULL, 0);
	bad |= check("short-genl-header", EINVAL, NULL, err, msg);

	init_req(&r, fam, 99);
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("unknown-command", EOPNOTSUPP, NULL, err, msg);

	init_req(&r, fam, ICMPMON_CMD_RECORDS);
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("records-from-user", EOPNOTSUPP, NULL, err, msg);

	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	r.genl.reserved = 7;
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("reserved-field-set", EINVAL, NULL, err, msg);

	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	u16 = 128;
	put_attr(&r, ICMPMON_A_SNAPLEN, &u16, sizeof(u16));
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("snaplen-as-u16", EINVAL, "attribute length", err, msg);

	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	u32 = 1;
	put_attr(&r, ICMPMON_A_SNAPLEN, &u32, sizeof(u32));
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("snaplen-out-of-range", ERANGE, "range", err, msg);

	/* Above what an s16 policy bound could hold. */
	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	u32 = 100000;
	put_attr(&r, ICMPMON_A_BATCH_BYTES, &u32, sizeof(u32));
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("batch-bytes-too-large", ERANGE, "range", err, msg);

	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	u32 = 0x80;
	put_attr(&r, ICMPMON_A_HOOK_MASK, &u32, sizeof(u32));
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("hook-mask-unknown-bit", EINVAL, NULL, err, msg);

	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	u32 = 0;
	put_attr(&r, ICMPMON_A_HOOK_MASK, &u32, sizeof(u32));
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("hook-mask-zero", EINVAL, "no hook", err, msg);

	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	u32 = 0;
	put_attr(&r, 200, &u32, sizeof(u32));
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("unknown-attribute", EINVAL, NULL, err, msg);

	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	put_attr(&r, ICMPMON_A_SEQ, &(uint64_t){ 1 }, sizeof(uint64_t));
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("kernel-only-attribute", EINVAL, NULL, err, msg);

	/* An attribute whose length runs past the end of the message. */
	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	u32 = 256;
	put_attr(&r, ICMPMON_A_SNAPLEN, &u32, sizeof(u32));
	((struct nlattr *)r.attrs)->nla_len = 64;
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("attribute-overruns", EINVAL, NULL, err, msg);

	init_req(&r, fam, ICMPMON_CMD_CLOSE);
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("close-unregistered", ENOENT, "not registered", err, msg);

	/* Per-command policies: CLOSE and STATS take none of REGISTER's. */
	init_req(&r, fam, ICMPMON_CMD_CLOSE);
	u32 = 256;
	put_attr(&r, ICMPMON_A_SNAPLEN, &u32, sizeof(u32));
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("close-with-snaplen", EINVAL, "ttribute", err, msg);

	init_req(&r, fam, ICMPMON_CMD_STATS);
	u32 = ICMPMON_HOOK_F_PRE_ROUTING;
	put_attr(&r, ICMPMON_A_HOOK_MASK, &u32, sizeof(u32));
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("stats-with-hook-mask", EINVAL, "ttribute", err, msg);

	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("register", 0, NULL, err, msg);
	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("register-twice", EEXIST, "already", err, msg);
	init_req(&r, fam, ICMPMON_CMD_CLOSE);
	err = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	bad |= check("close", 0, NULL, err, msg);

	printf("badmsg %s\n", bad ? "FAILED" : "all answered as expected");
	return bad;
}

/* ---- unload safety: freed memory, portid theft, namespace churn ---- */

#define POISON64 0x6b6b6b6b6b6b6b6bULL	/* slub_debug=P: freed memory */

/*
 * One STATS request; counts values that cannot be real counters (freed
 * memory, or anything past 2^48) into *bad.
 */
static int stats_once(int fd, int fam, int *bad)
{
	char reply[4096];
	struct nlmsghdr *h = (struct nlmsghdr *)reply;
	struct nlreq r;
	int off, err;

	init_req(&r, fam, ICMPMON_CMD_STATS);
	memset(reply, 0, sizeof(reply));
	err = transact(fd, &r, 0, NULL, 0, reply, sizeof(reply));
	if (err)
		return err;
	if (!h->nlmsg_len)
		return -ENODATA;
	off = NLMSG_HDRLEN + GENL_HDRLEN;
	for (struct nlattr *a; (a = next_attr(reply, reply_len(h, sizeof(reply)), &off));) {
		uint64_t v64;
		uint32_t v32;

		if (a->nla_len == NLA_HDRLEN + 8) {
			memcpy(&v64, (char *)a + NLA_HDRLEN, 8);
			if (v64 == POISON64 || v64 >> 48)
				(*bad)++;
		} else if (a->nla_len == NLA_HDRLEN + 4) {
			memcpy(&v32, (char *)a + NLA_HDRLEN, 4);
			if (v32 == (uint32_t)POISON64 || v32 > 1000)
				(*bad)++;
		}
	}
	return 0;
}

/* Loops end when this file exists, or after 10 minutes. */
static int stop_requested(const char *stopfile, double started)
{
	return access(stopfile, F_OK) == 0 || now() - started > 600;
}

static int cmd_statsloop(const char *stopfile)
{
	unsigned long replies = 0, refused = 0, lookups = 0;
	int fd = nl_open(), fam = -1, bad = 0;
	double started = now();

	if (fd < 0)
		return perror("statsloop: socket"), 1;
	while (!stop_requested(stopfile, started)) {
		if (fam < 0) {
			lookups++;
			fam = family_id(fd);
			if (fam < 0) {
				usleep(500);
				continue;
			}
		}
		if (stats_once(fd, fam, &bad)) {
			refused++;
			fam = -1;	/* unloaded: look the family up again */
		} else {
			replies++;
		}
	}
	printf("statsloop replies=%lu refused=%lu lookups=%lu bad_values=%d\n",
	       replies, refused, lookups, bad);
	return bad ? 1 : 0;
}

static void lo_up(void)
{
	struct ifreq ifr = { 0 };
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (fd >= 0 && ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		ioctl(fd, SIOCSIFFLAGS, &ifr);
	}
	if (fd >= 0)
		close(fd);
}

/* Sends n echo requests to 127.0.0.1 from a raw socket (no waiting). */
static void pings(int raw, int n)
{
	struct sockaddr_in dst = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int i;

	for (i = 0; i < n; i++) {
		struct icmphdr req = { .type = ICMP_ECHO };

		req.un.echo.id = htons((uint16_t)getpid());
		req.un.echo.sequence = htons((uint16_t)i);
		req.checksum = csum(&req, sizeof(req));
		sendto(raw, &req, sizeof(req), 0, (struct sockaddr *)&dst, sizeof(dst));
	}
}

/* REGISTERs a fresh socket; returns it (and the family in *famp), or -1. */
static int subscribe(int *famp)
{
	struct nlreq r;
	int fd = nl_open(), fam;

	if (fd < 0 || (fam = family_id(fd)) < 0)
		return -1;
	if (famp)
		*famp = fam;
	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	if (transact(fd, &r, 0, NULL, 0, NULL, 0)) {
		close(fd);
		return -1;
	}
	return fd;
}

static int cmd_nschurn(const char *stopfile)
{
	unsigned long cycles = 0, registered = 0;
	double started = now();

	while (!stop_requested(stopfile, started)) {
		pid_t pid = fork();
		int st;

		if (pid == 0) {
			int raw;

			if (unshare(CLONE_NEWNET))
				_exit(2);
			lo_up();
			if (subscribe(NULL) < 0)
				_exit(3);
			raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
			pings(raw, 4);
			usleep(3000);
			/* Exit: the socket closes, then the namespace goes. */
			_exit(0);
		}
		if (pid < 0 || waitpid(pid, &st, 0) < 0)
			return perror("nschurn"), 1;
		cycles++;
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			registered++;
	}
	printf("nschurn cycles=%lu registered=%lu\n", cycles, registered);
	return 0;
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY), ok;

	ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text);
	if (fd >= 0)
		close(fd);
	return ok ? 0 : -1;
}

static int cmd_policy(int userns)
{
	char msg[256], reply[4096], map[64];
	int fd, fam, reg, st;
	struct nlreq r;

	if (userns) {
		unsigned int uid = getuid(), gid = getgid();

		if (unshare(CLONE_NEWUSER | CLONE_NEWNET))
			return perror("policy: unshare"), 1;
		snprintf(map, sizeof(map), "0 %u 1", uid);
		if (write_file("/proc/self/uid_map", map) ||
		    write_file("/proc/self/setgroups", "deny"))
			return perror("policy: uid_map"), 1;
		snprintf(map, sizeof(map), "0 %u 1", gid);
		if (write_file("/proc/self/gid_map", map))
			return perror("policy: gid_map"), 1;
	}
	fd = nl_open();
	if (fd < 0)
		return perror("policy: socket"), 1;
	fam = family_id(fd);
	if (fam < 0) {
		printf("family=%d\n", fam);
		return 0;
	}
	init_req(&r, fam, ICMPMON_CMD_REGISTER);
	reg = transact(fd, &r, 0, msg, sizeof(msg), NULL, 0);
	init_req(&r, fam, ICMPMON_CMD_STATS);
	st = transact(fd, &r, 0, NULL, 0, reply, sizeof(reply));
	printf("family=0 register=%d stats=%d extack=\"%s\"\n", reg, st, msg);
	return 0;
}

/*
 * The thief's verdict (its exit status): never bound, or which messages it
 * received (bit 0 RECORDS, 1 BYE, 2 anything else; 0: nothing).
 */
#define THIEF_NEVER_BOUND 100

static void thief(uint32_t portid)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_pid = portid };
	double until = now() + 3;
	char buf[65536];
	int fd, got = 0;

	if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
		_exit(THIEF_NEVER_BOUND + 1);
	for (;;) {
		fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC);
		if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		close(fd);
		if (now() > until)
			_exit(THIEF_NEVER_BOUND);
	}
	until = now() + 1;
	while (now() < until) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		struct nlmsghdr *h = (struct nlmsghdr *)buf;
		ssize_t n;

		if (poll(&p, 1, 50) <= 0)
			continue;
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < (ssize_t)(NLMSG_HDRLEN + GENL_HDRLEN)) {
			got |= n > 0 ? 4 : 0;
			continue;
		}
		switch (((struct genlmsghdr *)NLMSG_DATA(h))->cmd) {
		case ICMPMON_CMD_RECORDS:
			got |= 1;
			break;
		case ICMPMON_CMD_BYE:
			got |= 2;
			break;
		default:
			got |= 4;
		}
	}
	_exit(got);
}

static int cmd_steal(int trials)
{
	int t, bound = 0, stolen = 0, what = 0;

	for (t = 0; t < trials; t++) {
		pid_t sub, thf, rm;
		uint32_t portid = 0;
		int p[2], st;

		if (system("modprobe icmpmon") || pipe(p))
			return fprintf(stderr, "steal: modprobe/pipe failed\n"), 1;
		sub = fork();
		if (sub == 0) {
			struct sockaddr_nl sa;
			socklen_t sl = sizeof(sa);
			int fd = subscribe(NULL), raw;

			if (fd < 0 || getsockname(fd, (struct sockaddr *)&sa, &sl))
				_exit(1);
			if (write(p[1], &sa.nl_pid, sizeof(sa.nl_pid)) != sizeof(sa.nl_pid))
				_exit(1);
			/* Records pile up unread: there is always a batch pending. */
			raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
			for (;;) {
				pings(raw, 1);
				usleep(200);
			}
		}
		close(p[1]);
		if (read(p[0], &portid, sizeof(portid)) != sizeof(portid))
			return fprintf(stderr, "steal: subscriber did not register\n"), 1;
		close(p[0]);
		thf = fork();
		if (thf == 0)
			thief(portid);
		usleep(20000 + (t % 10) * 2000);
		/* Killed just as rmmod starts. */
		rm = fork();
		if (rm == 0) {
			execl("/bin/busybox", "rmmod", "icmpmon", (char *)NULL);
			_exit(127);
		}
		kill(sub, SIGKILL);
		waitpid(sub, &st, 0);
		waitpid(rm, &st, 0);
		waitpid(thf, &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != THIEF_NEVER_BOUND)
			bound++;
		if (!WIFEXITED(st) || (WEXITSTATUS(st) > 0 && WEXITSTATUS(st) < THIEF_NEVER_BOUND)) {
			stolen++;
			what |= WIFEXITED(st) ? WEXITSTATUS(st) : 4;
		}
	}
	if (system("modprobe icmpmon"))
		return fprintf(stderr, "steal: modprobe failed\n"), 1;
	printf("steal trials=%d bound=%d stolen=%d%s%s%s\n", trials, bound, stolen,
	       what & 1 ? " (RECORDS)" : "", what & 2 ? " (BYE)" : "", what & 4 ? " (other)" : "");
	return stolen ? 1 : 0;
}

/*
 * A C reader as the header invites one to be written: it casts each record
 * in place, so the records must be 8-byte aligned (checked, not assumed).
 */
static int cmd_records(double seconds)
{
	static char buf[256 * 1024] __attribute__((aligned(8)));
	unsigned long n = 0, misaligned = 0, malformed = 0;
	int size = 4 << 20, fam = -1, fd = subscribe(&fam);
	double end = now() + seconds;
	struct nlreq r;

	if (fd < 0)
		return fprintf(stderr, "records: REGISTER failed\n"), 1;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
	fprintf(stderr, "records: registered\n");
	while (now() < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		struct nlmsghdr *h;
		ssize_t len;

		if (poll(&p, 1, 100) <= 0)
			continue;
		len = recv(fd, buf, sizeof(buf), 0);
		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
			struct genlmsghdr *g = NLMSG_DATA(h);
			int off = NLMSG_HDRLEN + GENL_HDRLEN;
			struct nlattr *a;

			if (h->nlmsg_type != fam || g->cmd != ICMPMON_CMD_RECORDS)
				continue;
			while ((a = next_attr((char *)h, h->nlmsg_len, &off))) {
				const char *payload = (char *)a + NLA_HDRLEN;
				int plen = a->nla_len - NLA_HDRLEN, roff = 0;

				if (a->nla_type != ICMPMON_A_RECORDS)
					continue;
				while (roff + (int)sizeof(struct icmpmon_rec) <= plen) {
					const struct icmpmon_rec *rec =
						(const struct icmpmon_rec *)(payload + roff);
					time_t secs = rec->ts_real_ns / 1000000000ULL;
					char when[32];

					if (rec->hdr_len < sizeof(*rec) ||
					    roff + rec->hdr_len + rec->caplen > plen) {
						malformed++;
						break;
					}
					if ((uintptr_t)rec % 8)
						misaligned++;
					strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", gmtime(&secs));
					printf("%s.%09lluZ,%s,%u,%u\n", when,
					       (unsigned long long)(rec->ts_real_ns % 1000000000ULL),
					       rec->hook == ICMPMON_HOOK_PRE_ROUTING ? "in" : "out",
					       rec->family, rec->origlen);
					n++;
					roff += (rec->hdr_len + rec->caplen + ICMPMON_REC_ALIGN - 1) &
						~(ICMPMON_REC_ALIGN - 1);
				}
			}
		}
	}
	fflush(stdout);
	init_req(&r, fam, ICMPMON_CMD_CLOSE);
	transact(fd, &r, 0, NULL, 0, NULL, 0);
	fprintf(stderr, "records: %lu records, %lu misaligned, %lu malformed\n", n, misaligned,
		malformed);
	return misaligned || malformed ? 1 : 0;
}

/* A terminal for the dashboard test: the VM has no tmux. */
static int cmd_pty(const char *out, const char *go, const char *keys, char **cmd)
{
	struct winsize ws = { .ws_row = 40, .ws_col = 120 };
	int master, slave, status = 0, typed = 0, fd;
	double start = now();
	char buf[4096];
	pid_t pid;

	master = posix_openpt(O_RDWR | O_NOCTTY);
	if (master < 0 || grantpt(master) || unlockpt(master)) {
		perror("pty");
		return 1;
	}
	ioctl(master, TIOCSWINSZ, &ws);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		perror(out);
		return 1;
	}
	pid = fork();
	if (pid == 0) {
		setsid();
		slave = open(ptsname(master), O_RDWR);
		if (slave < 0 || ioctl(slave, TIOCSCTTY, 0)) {
			perror("slave");
			_exit(127);
		}
		dup2(slave, 0);
		dup2(slave, 1);
		close(master);
		execvp(cmd[0], cmd);
		perror(cmd[0]);
		_exit(127);
	}
	for (;;) {
		struct pollfd p = { .fd = master, .events = POLLIN };
		ssize_t n;

		if (!typed && access(go, F_OK) == 0) {
			if (write(master, keys, strlen(keys)) < 0)
				perror("keys");
			typed = 1;
		}
		if (now() - start > 60) {
			kill(pid, SIGKILL);
			fprintf(stderr, "pty: %s still running after 60 s\n", cmd[0]);
		}
		if (poll(&p, 1, 50) > 0) {
			n = read(master, buf, sizeof(buf));
			if (n <= 0)
				break;	/* EIO: every slave side closed */
			if (write(fd, buf, n) != n)
				perror(out);
		}
		if (waitpid(pid, &status, WNOHANG) == pid) {
			while (poll(&p, 1, 0) > 0 && (n = read(master, buf, sizeof(buf))) > 0)
				if (write(fd, buf, n) != n)
					perror(out);
			pid = 0;
			break;
		}
	}
	if (pid > 0)
		waitpid(pid, &status, 0);
	close(fd);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "flood"))
		return cmd_flood(argv[2], atof(argv[3]));
	if (argc >= 4 && !strcmp(argv[1], "udp"))
		return cmd_udp(argv[2], atoi(argv[3]));
	if (argc >= 4 && !strcmp(argv[1], "runas"))
		return cmd_runas(atoi(argv[2]), argv + 3);
	if (argc >= 4 && !strcmp(argv[1], "hold"))
		return cmd_hold(atoi(argv[2]), atoi(argv[3]),
				argc >= 5 ? strtoul(argv[4], NULL, 0) : 0);
	if (argc >= 2 && !strcmp(argv[1], "badmsg"))
		return cmd_badmsg();
	if (argc >= 3 && !strcmp(argv[1], "statsloop"))
		return cmd_statsloop(argv[2]);
	if (argc >= 3 && !strcmp(argv[1], "nschurn"))
		return cmd_nschurn(argv[2]);
	if (argc >= 3 && !strcmp(argv[1], "steal"))
		return cmd_steal(atoi(argv[2]));
	if (argc >= 2 && !strcmp(argv[1], "policy"))
		return cmd_policy(argc >= 3 && !strcmp(argv[2], "userns"));
	if (argc >= 3 && !strcmp(argv[1], "records"))
		return cmd_records(atof(argv[2]));
	if (argc >= 6 && !strcmp(argv[1], "pty"))
		return cmd_pty(argv[2], argv[3], argv[4], argv + 5);
	fprintf(stderr, "usage: vmhelper flood|udp|runas|hold|badmsg|statsloop|nschurn|steal|policy|records|pty ...\n");
	return 2;
}

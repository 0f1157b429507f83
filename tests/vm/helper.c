// SPDX-License-Identifier: GPL-2.0
/*
 * vmhelper: small tools the VM scenarios need and Debian's busybox lacks.
 * Built with gcc -static and put into the test initramfs.
 *
 *   vmhelper flood ADDR SECONDS   ICMP echo ping-pong as fast as replies come
 *   vmhelper udp ADDR PORT        one UDP datagram (to a closed port)
 *   vmhelper runas UID CMD...     drop to UID/GID (no capabilities) and exec
 *   vmhelper hold N SECONDS       REGISTER N sockets with icmpmon, then sleep
 *   vmhelper badmsg               malformed netlink battery (error acks only)
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
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
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
	r->genl.version = 1;
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
	for (off = NLMSG_HDRLEN + GENL_HDRLEN; off + NLA_HDRLEN <= (int)h->nlmsg_len;) {
		struct nlattr *a = (struct nlattr *)(reply + off);

		if (a->nla_len < NLA_HDRLEN)
			break;
		if (a->nla_type == CTRL_ATTR_FAMILY_ID)
			return *(uint16_t *)((char *)a + NLA_HDRLEN);
		off += NLA_ALIGN(a->nla_len);
	}
	return -ENOENT;
}

static int cmd_hold(int n, int seconds)
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
		return cmd_hold(atoi(argv[2]), atoi(argv[3]));
	if (argc >= 2 && !strcmp(argv[1], "badmsg"))
		return cmd_badmsg();
	if (argc >= 6 && !strcmp(argv[1], "pty"))
		return cmd_pty(argv[2], argv[3], argv[4], argv + 5);
	fprintf(stderr, "usage: vmhelper flood|udp|runas|hold|badmsg|pty ...\n");
	return 2;
}

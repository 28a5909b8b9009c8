/*
 * mvhttp: the two user-space sides of `modvisor bench handler`, for a guest that has
 * nothing but busybox: a static, freestanding x86-64 Linux program of a few KiB (no
 * libc), small enough to pass through one exec's stdin.
 *
 *   mvhttp load IPV4 PORT CONNS SECS keepalive|close PATH
 *       CONNS connections, each sending GET PATH and reading the whole response before
 *       the next (closing after each one with `close`), for SECS seconds, one process,
 *       epoll. Prints one line:
 *       requests=N errors=E seconds=S p50_us=A p99_us=B bytes=T
 *   mvhttp serve PORT BODYFILE
 *       The user-space peer of khttpd: the same response (HTTP/1.1, the same header
 *       lines, the body of BODYFILE, at most 4096 bytes), keep-alive unless the request
 *       says close, one process, epoll. Detaches and prints its pid.
 */

typedef unsigned long u64;
typedef long i64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_dup2 33
#define SYS_socket 41
#define SYS_connect 42
#define SYS_sendto 44
#define SYS_shutdown 48
#define SYS_bind 49
#define SYS_listen 50
#define SYS_setsockopt 54
#define SYS_getsockopt 55
#define SYS_fork 57
#define SYS_setsid 112
#define SYS_clock_gettime 228
#define SYS_exit_group 231
#define SYS_epoll_wait 232
#define SYS_epoll_ctl 233
#define SYS_accept4 288
#define SYS_epoll_create1 291

#define AF_INET 2
#define SOCK_STREAM 1
#define SOCK_NONBLOCK 04000
#define SOL_SOCKET 1
#define SO_REUSEADDR 2
#define SO_ERROR 4
#define IPPROTO_TCP 6
#define TCP_NODELAY 1
#define EPOLLIN 1
#define EPOLLOUT 4
#define EPOLLERR 8
#define EPOLLHUP 16
#define EPOLL_CTL_ADD 1
#define EPOLL_CTL_DEL 2
#define EPOLL_CTL_MOD 3
#define EAGAIN 11
#define EINTR 4
#define EINPROGRESS 115
#define EMFILE 24
#define ENFILE 23
#define SHUT_WR 1
#define MSG_NOSIGNAL 0x4000

static i64 sys6(i64 n, i64 a, i64 b, i64 c, i64 d, i64 e, i64 f)
{
	i64 ret;
	register i64 r10 __asm__("r10") = d;
	register i64 r8 __asm__("r8") = e;
	register i64 r9 __asm__("r9") = f;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}
#define sys3(n, a, b, c) sys6(n, (i64)(a), (i64)(b), (i64)(c), 0, 0, 0)

/* The compiler may emit calls to these even with -fno-builtin. */
void *memset(void *d, int c, u64 n)
{
	u8 *p = d;
	while (n--)
		*p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, u64 n)
{
	u8 *p = d;
	const u8 *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

static u64 slen(const char *s)
{
	u64 n = 0;
	while (s[n])
		n++;
	return n;
}

static void out(int fd, const char *s)
{
	sys3(SYS_write, fd, s, slen(s));
}

static __attribute__((noreturn)) void quit(int code)
{
	for (;;)
		sys3(SYS_exit_group, code, 0, 0);
}

static __attribute__((noreturn)) void die(const char *what)
{
	out(2, "mvhttp: ");
	out(2, what);
	out(2, "\n");
	quit(1);
}

/* Decimal digits of v into buf (at least 21 bytes); returns the end. */
static char *utoa(char *buf, u64 v)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*buf++ = tmp[--n];
	*buf = 0;
	return buf;
}

static int parse_u64(const char *s, u64 *v)
{
	*v = 0;
	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || *v > 100000000000ul)
			return -1;
		*v = *v * 10 + (u64)(*s - '0');
	}
	return 0;
}

static int streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static u8 lower(u8 c)
{
	return c >= 'A' && c <= 'Z' ? (u8)(c + 32) : c;
}

/* Offset of the first `needle` (lowercase) in buf[0..n), ignoring case, or -1. */
static i64 find_ci(const char *buf, u64 n, const char *needle)
{
	u64 m = slen(needle), i, j;
	for (i = 0; i + m <= n; i++) {
		for (j = 0; j < m && lower((u8)buf[i + j]) == (u8)needle[j]; j++)
			;
		if (j == m)
			return (i64)i;
	}
	return -1;
}

/* Length of the header block (through the empty line), or 0 if not complete. */
static u64 header_len(const char *buf, u64 n)
{
	u64 i;
	for (i = 3; i < n; i++)
		if (buf[i - 3] == '\r' && buf[i - 2] == '\n' && buf[i - 1] == '\r' && buf[i] == '\n')
			return i + 1;
	return 0;
}

struct timespec {
	i64 sec, nsec;
};

static u64 now_us(void)
{
	struct timespec t;
	sys3(SYS_clock_gettime, 1 /* CLOCK_MONOTONIC */, &t, 0);
	return (u64)t.sec * 1000000ul + (u64)t.nsec / 1000ul;
}

struct sockaddr_in {
	u16 family, port;
	u32 addr;
	u8 zero[8];
};

struct epoll_event {
	u32 events;
	u64 data;
} __attribute__((packed));

static int parse_ipv4(const char *s, u32 *addr)
{
	u32 a = 0;
	int parts = 0;
	while (parts < 4) {
		u64 v = 0;
		int digits = 0;
		while (*s >= '0' && *s <= '9' && digits < 4)
			v = v * 10 + (u64)(*s++ - '0'), digits++;
		if (!digits || v > 255)
			return -1;
		a |= (u32)v << (8 * parts);	/* network order: first byte lowest */
		parts++;
		if (parts < 4 && *s++ != '.')
			return -1;
	}
	*addr = a;
	return *s ? -1 : 0;
}

static u16 be16(u64 v)
{
	return (u16)(((v & 0xff) << 8) | ((v >> 8) & 0xff));
}

/* write() without SIGPIPE on a connection the peer closed */
static i64 send_all_or_less(int fd, const void *buf, u64 n)
{
	return sys6(SYS_sendto, fd, (i64)buf, (i64)n, MSG_NOSIGNAL, 0, 0);
}

/* Watches fd for events; epoll reports `data` with them. */
static void epoll_set(int ep, int op, int fd, u32 events, u64 data)
{
	struct epoll_event ev = { events, data };
	if (sys6(SYS_epoll_ctl, ep, op, fd, (i64)&ev, 0, 0) < 0)
		die("epoll_ctl");
}

static void nodelay(int fd)
{
	int one = 1;
	sys6(SYS_setsockopt, fd, IPPROTO_TCP, TCP_NODELAY, (i64)&one, sizeof one, 0);
}

/* ---------------------------------------------------------------- load ---------- */

#define MAX_CONNS 256
#define RESP_MAX 8192
/* Latencies: 1 us buckets below 1 s, then 1 ms buckets up to the request timeout. */
#define FINE_US 1000000ul
#define REQUEST_TIMEOUT_US 10000000ul
#define COARSE ((REQUEST_TIMEOUT_US - FINE_US) / 1000ul + 1)
#define BUCKETS (FINE_US + COARSE)

static u32 hist[BUCKETS];

struct client {
	int fd;			/* -1: not connected */
	int idx;		/* in clients[], what epoll reports */
	int connecting;
	u64 sent;		/* bytes of the request written */
	u64 got;		/* bytes of the response in resp[] */
	u64 total;		/* bytes of the response read, all told */
	u64 want;		/* the whole response's length, once its header is in; 0 until */
	int ok;			/* its status line says 2xx (known with the header) */
	int chunked_or_unknown;	/* no Content-Length: the response ends at EOF */
	int closes;		/* the server said Connection: close */
	u64 start_us;
	char resp[RESP_MAX];
};

static struct client clients[MAX_CONNS];
static char request[512];
static u64 request_len;
static struct sockaddr_in target;
static int keepalive;
static u64 requests, errors, bytes;

static void client_close(int ep, struct client *c)
{
	if (c->fd >= 0) {
		epoll_set(ep, EPOLL_CTL_DEL, c->fd, 0, 0);
		sys3(SYS_close, c->fd, 0, 0);
	}
	c->fd = -1;
}

/* Starts a request on c: connects when c has no connection, then writes. */
static void client_begin(int ep, struct client *c)
{
	c->sent = c->got = c->total = c->want = 0;
	c->chunked_or_unknown = 0;
	c->closes = 0;
	c->ok = 0;
	c->start_us = now_us();
	if (c->fd < 0) {
		i64 fd = sys3(SYS_socket, AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), r;
		if (fd < 0)
			die("socket");
		nodelay((int)fd);
		r = sys3(SYS_connect, fd, &target, sizeof target);
		if (r < 0 && r != -EINPROGRESS) {
			sys3(SYS_close, fd, 0, 0);
			errors++;
			return;
		}
		c->fd = (int)fd;
		c->connecting = 1;
		epoll_set(ep, EPOLL_CTL_ADD, c->fd, EPOLLOUT, (u64)c->idx);
		return;
	}
	epoll_set(ep, EPOLL_CTL_MOD, c->fd, EPOLLOUT, (u64)c->idx);
}

static void record(u64 us)
{
	u64 i = us < FINE_US ? us : FINE_US + (us - FINE_US) / 1000ul;
	hist[i < BUCKETS ? i : BUCKETS - 1]++;
}

/* The latency a bucket stands for, microseconds. */
static u64 bucket_us(u64 i)
{
	return i < FINE_US ? i : FINE_US + (i - FINE_US) * 1000ul;
}

static void client_fail(int ep, struct client *c)
{
	errors++;
	client_close(ep, c);
}

/* The response is complete: counts it; returns 1 if the connection stays. */
static int client_done(int ep, struct client *c)
{
	if (!c->ok) {
		client_fail(ep, c);
		return 0;
	}
	requests++;
	bytes += c->total;
	record(now_us() - c->start_us);
	if (!keepalive || c->chunked_or_unknown || c->closes) {
		client_close(ep, c);
		return 0;
	}
	return 1;
}

static void client_event(int ep, struct client *c, u32 events)
{
	if (c->connecting) {
		int err = 0;
		u32 len = sizeof err;
		sys6(SYS_getsockopt, c->fd, SOL_SOCKET, SO_ERROR, (i64)&err, (i64)&len, 0);
		if (err || (events & (EPOLLERR | EPOLLHUP))) {
			client_fail(ep, c);
			return;
		}
		c->connecting = 0;
	}
	if (c->sent < request_len) {
		i64 n = send_all_or_less(c->fd, request + c->sent, request_len - c->sent);
		if (n < 0 && n != -EAGAIN) {
			client_fail(ep, c);
			return;
		}
		if (n > 0)
			c->sent += (u64)n;
		if (c->sent == request_len)
			epoll_set(ep, EPOLL_CTL_MOD, c->fd, EPOLLIN, (u64)c->idx);
		return;
	}
	for (;;) {
		u64 room = RESP_MAX - c->got;
		i64 n;
		if (!room) {
			if (!c->want && !c->chunked_or_unknown) {
				client_fail(ep, c);	/* a header larger than we buffer */
				return;
			}
			/* a body larger than we buffer: counted, not kept */
			c->got = 0;
			room = RESP_MAX;
		}
		n = sys3(SYS_read, c->fd, c->resp + c->got, room);
		if (n == -EAGAIN)
			return;
		if (n < 0) {
			client_fail(ep, c);
			return;
		}
		if (n == 0) {
			if (c->chunked_or_unknown)
				client_done(ep, c);
			else
				client_fail(ep, c);
			return;
		}
		c->got += (u64)n;
		c->total += (u64)n;
		if (!c->want && !c->chunked_or_unknown) {
			u64 h = header_len(c->resp, c->got);
			i64 cl;
			if (!h)
				continue;
			c->ok = h > 12 && c->resp[9] == '2';
			/* the server closes after this one: so do we, having read it */
			if (find_ci(c->resp, h, "\r\nconnection: close") >= 0)
				c->closes = 1;
			cl = find_ci(c->resp, h, "\r\ncontent-length:");
			if (cl < 0) {
				c->chunked_or_unknown = 1;
				continue;
			}
			{
				const char *p = c->resp + cl + 17;
				u64 v = 0;
				while (*p == ' ')
					p++;
				while (*p >= '0' && *p <= '9')
					v = v * 10 + (u64)(*p++ - '0');
				c->want = h + v;
			}
		}
		if (c->want && c->total >= c->want)
			return;	/* the caller sees total >= want */
	}
}

static int cmd_load(char **argv)
{
	u64 port, conns, secs, i, end, last_check;
	int ep;
	char line[256], *p;
	if (parse_ipv4(argv[0], &target.addr) || parse_u64(argv[1], &port) || !port ||
	    port > 65535 || parse_u64(argv[2], &conns) || !conns || conns > MAX_CONNS ||
	    parse_u64(argv[3], &secs) || !secs || secs > 3600)
		die("usage: mvhttp load IPV4 PORT CONNS(1-256) SECS keepalive|close PATH");
	if (streq(argv[4], "keepalive"))
		keepalive = 1;
	else if (!streq(argv[4], "close"))
		die("the mode is keepalive or close");
	if (slen(argv[5]) > 256 || argv[5][0] != '/')
		die("the path starts with / and has at most 256 bytes");
	target.family = AF_INET;
	target.port = be16(port);
	p = request;
	memcpy(p, "GET ", 4), p += 4;
	memcpy(p, argv[5], slen(argv[5])), p += slen(argv[5]);
	memcpy(p, " HTTP/1.1\r\nHost: ", 17), p += 17;
	memcpy(p, argv[0], slen(argv[0])), p += slen(argv[0]);
	if (keepalive)
		memcpy(p, "\r\nConnection: keep-alive\r\n\r\n", 28), p += 28;
	else
		memcpy(p, "\r\nConnection: close\r\n\r\n", 23), p += 23;
	request_len = (u64)(p - request);

	ep = (int)sys3(SYS_epoll_create1, 0, 0, 0);
	if (ep < 0)
		die("epoll_create1");
	for (i = 0; i < conns; i++) {
		clients[i].fd = -1;
		clients[i].idx = (int)i;
		client_begin(ep, &clients[i]);
	}
	end = now_us() + secs * 1000000ul;
	last_check = now_us();
	for (;;) {
		struct epoll_event evs[64];
		i64 n = sys6(SYS_epoll_wait, ep, (i64)evs, 64, 100, 0, 0), k;
		u64 t = now_us();
		if (n < 0 && n != -EINTR)
			die("epoll_wait");
		if (t >= end)
			break;
		for (k = 0; k < n; k++) {
			struct client *c = &clients[evs[k].data];
			if (c->fd < 0)
				continue;
			client_event(ep, c, evs[k].events);
			if (c->fd < 0) {
				client_begin(ep, c);
			} else if (c->want && c->total >= c->want) {
				client_done(ep, c);
				client_begin(ep, c);
			}
		}
		/* connections that failed to start, and requests that hang */
		if (t - last_check > 100000) {
			last_check = t;
			for (i = 0; i < conns; i++) {
				if (clients[i].fd < 0) {
					client_begin(ep, &clients[i]);
				} else if (t > clients[i].start_us &&
					   t - clients[i].start_us > REQUEST_TIMEOUT_US) {
					client_fail(ep, &clients[i]);
					client_begin(ep, &clients[i]);
				}
			}
		}
	}
	{
		u64 seen = 0, p50 = 0, p99 = 0, us;
		for (i = 0; i < BUCKETS; i++) {
			seen += hist[i];
			us = bucket_us(i);
			if (!p50 && seen * 2 >= requests && requests)
				p50 = us ? us : 1;
			if (!p99 && seen * 100 >= requests * 99 && requests)
				p99 = us ? us : 1;
		}
		p = line;
		memcpy(p, "requests=", 9), p = utoa(p + 9, requests);
		memcpy(p, " errors=", 8), p = utoa(p + 8, errors);
		memcpy(p, " seconds=", 9), p = utoa(p + 9, secs);
		memcpy(p, " p50_us=", 8), p = utoa(p + 8, p50);
		memcpy(p, " p99_us=", 8), p = utoa(p + 8, p99);
		memcpy(p, " bytes=", 7), p = utoa(p + 7, bytes);
		memcpy(p, "\n", 2);
		out(1, line);
	}
	return 0;
}

/* --------------------------------------------------------------- serve ---------- */

#define MAX_FD 1024
#define REQ_MAX 2048
#define BODY_MAX 4096

struct conn {
	u32 len;
	u8 closing;		/* response sent with close: wait for the client's FIN */
	char req[REQ_MAX];
};

static struct conn *conns[MAX_FD];
static struct conn conn_pool[MAX_FD];
static char body[BODY_MAX];
static u64 body_len;
static char resp_keep[BODY_MAX + 256], resp_close[BODY_MAX + 256];
static u64 resp_keep_len, resp_close_len;

static u64 build_response(char *buf, const char *connection)
{
	char *p = buf;
	const char *head = "HTTP/1.1 200 OK\r\nServer: mvhttp\r\nContent-Type: text/plain\r\n"
			   "Content-Length: ";
	memcpy(p, head, slen(head)), p += slen(head);
	p = utoa(p, body_len);
	memcpy(p, "\r\nConnection: ", 14), p += 14;
	memcpy(p, connection, slen(connection)), p += slen(connection);
	memcpy(p, "\r\n\r\n", 4), p += 4;
	memcpy(p, body, body_len), p += body_len;
	return (u64)(p - buf);
}

static void conn_drop(int ep, int fd)
{
	epoll_set(ep, EPOLL_CTL_DEL, fd, 0, 0);
	sys3(SYS_close, fd, 0, 0);
	conns[fd] = 0;
}

/* Answers every complete request buffered on fd; 0 while the connection stays. */
static int conn_serve(int fd, struct conn *c)
{
	for (;;) {
		u64 h = header_len(c->req, c->len), n;
		int keep;
		const char *r;
		if (!h)
			return c->len == REQ_MAX ? -1 : 0;
		keep = find_ci(c->req, h, "\r\nconnection: close") < 0 &&
		       find_ci(c->req, h, " http/1.0\r\n") < 0;
		r = keep ? resp_keep : resp_close;
		n = keep ? resp_keep_len : resp_close_len;
		/* small responses fit the socket's send buffer: a short write is an error */
		if (send_all_or_less(fd, r, n) != (i64)n)
			return -1;
		memcpy(c->req, c->req + h, c->len - h);
		c->len -= (u32)h;
		if (!keep) {
			sys3(SYS_shutdown, fd, SHUT_WR, 0);
			c->closing = 1;
			return 0;
		}
	}
}

static int cmd_serve(char **argv)
{
	u64 port;
	i64 fd, ep, pid, n, spare;
	struct sockaddr_in addr = { 0 };
	int one = 1;
	char line[32];
	if (parse_u64(argv[0], &port) || !port || port > 65535)
		die("usage: mvhttp serve PORT BODYFILE");
	fd = sys3(SYS_open, argv[1], 0, 0);
	if (fd < 0)
		die("cannot open the body file");
	n = sys3(SYS_read, fd, body, BODY_MAX + 0);
	if (n < 0)
		die("cannot read the body file");
	body_len = (u64)n;
	sys3(SYS_close, fd, 0, 0);
	resp_keep_len = build_response(resp_keep, "keep-alive");
	resp_close_len = build_response(resp_close, "close");

	fd = sys3(SYS_socket, AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		die("socket");
	sys6(SYS_setsockopt, fd, SOL_SOCKET, SO_REUSEADDR, (i64)&one, sizeof one, 0);
	addr.family = AF_INET;
	addr.port = be16(port);
	if (sys3(SYS_bind, fd, &addr, sizeof addr) < 0)
		die("bind");
	if (sys3(SYS_listen, fd, 512, 0) < 0)
		die("listen");
	pid = sys3(SYS_fork, 0, 0, 0);
	if (pid < 0)
		die("fork");
	if (pid > 0) {
		memcpy(utoa(line, (u64)pid), "\n", 2);
		out(1, line);
		quit(0);
	}
	sys3(SYS_setsid, 0, 0, 0);
	/* the exec that started it ends when these close; /dev/null takes their places so
	   that no client's socket becomes fd 2 */
	spare = sys3(SYS_open, "/dev/null", 2 /* O_RDWR */, 0);
	if (spare < 0)
		quit(1);
	sys3(SYS_dup2, spare, 0, 0);
	sys3(SYS_dup2, spare, 1, 0);
	sys3(SYS_dup2, spare, 2, 0);
	ep = sys3(SYS_epoll_create1, 0, 0, 0);
	if (ep < 0)
		quit(1);
	epoll_set((int)ep, EPOLL_CTL_ADD, (int)fd, EPOLLIN, (u64)fd);
	for (;;) {
		struct epoll_event evs[64];
		i64 k;
		n = sys6(SYS_epoll_wait, ep, (i64)evs, 64, -1, 0, 0);
		for (k = 0; k < n; k++) {
			int cfd = (int)evs[k].data;
			struct conn *c;
			if (cfd == fd) {
				for (;;) {
					i64 a = sys6(SYS_accept4, fd, 0, 0, SOCK_NONBLOCK, 0, 0);
					if ((a == -EMFILE || a == -ENFILE) && spare >= 0) {
						/* out of descriptors: the listener would stay readable
						   and spin; refuse one connection with the spare */
						sys3(SYS_close, spare, 0, 0);
						a = sys6(SYS_accept4, fd, 0, 0, 0, 0, 0);
						if (a >= 0)
							sys3(SYS_close, a, 0, 0);
						spare = sys3(SYS_open, "/dev/null", 2, 0);
						continue;
					}
					if (a < 0)
						break;
					if (a >= MAX_FD) {
						sys3(SYS_close, a, 0, 0);
						continue;
					}
					nodelay((int)a);
					c = &conn_pool[a];
					c->len = 0;
					c->closing = 0;
					conns[a] = c;
					epoll_set((int)ep, EPOLL_CTL_ADD, (int)a, EPOLLIN, (u64)a);
				}
				continue;
			}
			c = conns[cfd];
			if (!c)
				continue;
			for (;;) {
				i64 r = sys3(SYS_read, cfd, c->req + c->len, REQ_MAX - c->len);
				if (r == -EAGAIN)
					break;
				if (r <= 0) {
					conn_drop((int)ep, cfd);
					break;
				}
				if (c->closing) {	/* after our close: drop what comes */
					c->len = 0;
					continue;
				}
				c->len += (u32)r;
				if (conn_serve(cfd, c)) {
					conn_drop((int)ep, cfd);
					break;
				}
			}
		}
	}
}

int main_c(int argc, char **argv)
{
	if (argc == 8 && streq(argv[1], "load"))
		return cmd_load(argv + 2);
	if (argc == 4 && streq(argv[1], "serve"))
		return cmd_serve(argv + 2);
	die("usage: mvhttp load IPV4 PORT CONNS SECS keepalive|close PATH | mvhttp serve PORT BODYFILE");
}

__asm__(".globl _start\n"
	"_start:\n"
	"  xor %rbp, %rbp\n"
	"  mov (%rsp), %rdi\n"
	"  lea 8(%rsp), %rsi\n"
	"  and $-16, %rsp\n"
	"  call main_c\n"
	"  mov %eax, %edi\n"
	"  mov $231, %eax\n"
	"  syscall\n"
	"  hlt\n");

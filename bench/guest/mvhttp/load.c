/* mvhttp, part 2 of 4 (after common.c): `mvhttp load`. build.rs joins the parts. */

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


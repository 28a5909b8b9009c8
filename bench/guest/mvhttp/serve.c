/* mvhttp, part 3 of 4 (after load.c): `mvhttp serve`. build.rs joins the parts. */

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


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
 *
 * One program in four parts, joined in order by ../../build.rs: this one (types, system
 * calls, string and socket helpers), load.c, serve.c and main.c (the entry point).
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


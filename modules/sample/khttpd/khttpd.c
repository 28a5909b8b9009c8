// SPDX-License-Identifier: GPL-2.0
/*
 * khttpd: a small in-kernel HTTP/1.1 responder, the idea behind modvisor: a server
 * whose request handling lives in kernel space. It listens on 0.0.0.0:<port> and
 * answers GET and HEAD with a fixed text/plain body, with keep-alive and pipelining.
 *
 * An accept kthread hands each connection to a work item of its own on an unbound
 * workqueue (at most max_conns at once). The work item reads requests into a bounded
 * buffer and answers them in order until the client closes or asks to, an error, or
 * an idle timeout. Request bodies are never read: such requests get 405/413 and close.
 *
 * It is built out of tree against Debian's linux-headers and is not signed, so a guest
 * kernel booted with module.sig_enforce=1 refuses it, and so does modvisor's vetting.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/workqueue.h>
#include <linux/slab.h>
#include <linux/ctype.h>
#include <linux/net.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <net/sock.h>

#define KHTTPD_REQ_MAX		2048		/* request header bytes we buffer */
#define KHTTPD_BODY_MAX		4096		/* longest body= accepted */
#define KHTTPD_HDR_MAX		256		/* room for our response header */
#define KHTTPD_IDLE_TIMEOUT	(30 * HZ)	/* idle keep-alive / stalled send */
#define KHTTPD_LINGER_TIME	HZ		/* see khttpd_linger() */
#define KHTTPD_LINGER_MAX	65536

static unsigned short port = 8080;
module_param(port, ushort, 0444);
MODULE_PARM_DESC(port, "TCP port to listen on, on all IPv4 addresses (default 8080)");

static char *body = "khttpd: served from kernel space\n";
module_param(body, charp, 0444);
MODULE_PARM_DESC(body, "Response body for GET (at most 4096 bytes)");

static unsigned short max_conns = 64;
module_param(max_conns, ushort, 0444);
MODULE_PARM_DESC(max_conns, "Most connections served at once, 1..512 (default 64)");

/* Requests answered (any status), shown read-only as the requests_served parameter. */
static atomic64_t served = ATOMIC64_INIT(0);

static int served_get(char *buffer, const struct kernel_param *kp)
{
	return scnprintf(buffer, PAGE_SIZE, "%lld\n", (long long)atomic64_read(&served));
}

static int served_set(const char *val, const struct kernel_param *kp)
{
	return -EPERM;		/* read-only: refuse requests_served= at insmod */
}

static const struct kernel_param_ops served_ops = {
	.set = served_set,
	.get = served_get,
};
module_param_cb(requests_served, &served_ops, NULL, 0444);
__MODULE_PARM_TYPE(requests_served, "ullong");
MODULE_PARM_DESC(requests_served, "Requests answered so far (read-only)");

/* One accepted connection, owned by its work item. */
struct khttpd_conn {
	struct list_head node;		/* in khttpd_conns, under khttpd_lock */
	struct work_struct work;
	struct socket *sock;
	size_t len;			/* bytes buffered in req[] */
	char req[KHTTPD_REQ_MAX];	/* received, not yet answered */
	char resp[KHTTPD_HDR_MAX + KHTTPD_BODY_MAX];
};

static size_t body_len;
static struct socket *listener;
static struct task_struct *accept_task;
static struct workqueue_struct *khttpd_wq;
static LIST_HEAD(khttpd_conns);		/* open connections */
static unsigned int nr_conns;		/* length of khttpd_conns */
static DEFINE_MUTEX(khttpd_lock);	/* a mutex: shutting a socket down may sleep */

static int khttpd_recv(struct socket *sock, char *buf, size_t len)
{
	struct kvec vec = { .iov_base = buf, .iov_len = len };
	struct msghdr msg = { };

	return kernel_recvmsg(sock, &msg, &vec, 1, len, 0);
}

static int khttpd_send(struct socket *sock, const char *buf, size_t len)
{
	while (len) {
		struct kvec vec = { .iov_base = (void *)buf, .iov_len = len };
		struct msghdr msg = { .msg_flags = MSG_NOSIGNAL };
		int n = kernel_sendmsg(sock, &msg, &vec, 1, len);

		if (n <= 0)
			return n ? n : -EIO;
		buf += n;
		len -= n;
	}
	return 0;
}

static const struct {
	int status;
	const char *reason, *text;
} khttpd_errors[] = {
	{ 400, "Bad Request", "bad request\n" },
	{ 405, "Method Not Allowed", "only GET and HEAD are served\n" },
	{ 413, "Payload Too Large", "request bodies are not accepted\n" },
	{ 431, "Request Header Fields Too Large", "request header too large\n" },
};

/* Send one response; the header only for HEAD. Returns 0 or a negative errno. */
static int khttpd_reply(struct khttpd_conn *c, int status, bool head, bool keep)
{
	const char *reason = "OK", *text = body;
	size_t i, tlen = body_len, len;
	int err;

	for (i = 0; i < ARRAY_SIZE(khttpd_errors); i++) {
		if (khttpd_errors[i].status == status) {
			reason = khttpd_errors[i].reason;
			text = khttpd_errors[i].text;
			tlen = strlen(text);
		}
	}
	len = scnprintf(c->resp, KHTTPD_HDR_MAX,
			"HTTP/1.1 %d %s\r\nServer: khttpd\r\nContent-Type: text/plain\r\n"
			"Content-Length: %zu\r\n%sConnection: %s\r\n\r\n",
			status, reason, tlen, status == 405 ? "Allow: GET, HEAD\r\n" : "",
			keep ? "keep-alive" : "close");
	if (!head) {
		memcpy(c->resp + len, text, tlen);
		len += tlen;
	}
	err = khttpd_send(c->sock, c->resp, len);
	if (!err)
		atomic64_inc(&served);
	return err;
}

/* A token character (RFC 9110 5.6.2): methods and header names are tokens. */
static bool khttpd_tchar(unsigned char ch)
{
	return ch < 0x80 && (isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch)));
}

static void khttpd_trim(const char **b, const char **e)
{
	while (*b < *e && (**b == ' ' || **b == '\t'))
		(*b)++;
	while (*e > *b && ((*e)[-1] == ' ' || (*e)[-1] == '\t'))
		(*e)--;
}

/* Does [b, e) equal s, ignoring case? */
static bool khttpd_is(const char *b, const char *e, const char *s)
{
	size_t n = strlen(s);

	return (size_t)(e - b) == n && !strncasecmp(b, s, n);
}

/* The CRLF ending the line at p; the header block always ends in one. */
static const char *khttpd_eol(const char *p, const char *end)
{
	for (; p + 1 < end; p++)
		if (p[0] == '\r' && p[1] == '\n')
			return p;
	return end;
}

/*
 * Parse one request header block: [p, end) holds the request line and header lines,
 * each ending in CRLF (end points at the empty line's CRLF). Returns the status to
 * answer with; *head: answer with the header only; *keep_alive: leave the connection
 * open afterwards (never after a 400, nor when the request has a body).
 */
static int khttpd_parse(const char *p, const char *end, bool *head, bool *keep_alive)
{
	const char *eol = khttpd_eol(p, end), *sp1, *sp2, *q;
	bool http10, get, has_body = false, close = false, keep = false;
	int hosts = 0;

	*head = *keep_alive = false;

	/* Request line: method SP request-target SP HTTP/1.x */
	sp1 = memchr(p, ' ', eol - p);
	if (!sp1 || sp1 == p)
		return 400;
	sp2 = memchr(sp1 + 1, ' ', eol - sp1 - 1);
	if (!sp2 || sp2 == sp1 + 1 || eol - sp2 != 9 ||
	    memcmp(sp2 + 1, "HTTP/1.", 7) || !isdigit(sp2[8]))
		return 400;
	for (q = p; q < sp1; q++)
		if (!khttpd_tchar(*q))
			return 400;
	for (q = sp1 + 1; q < sp2; q++)
		if ((unsigned char)*q <= ' ' || (unsigned char)*q >= 0x7f)
			return 400;
	http10 = sp2[8] == '0';
	get = sp1 - p == 3 && !memcmp(p, "GET", 3);
	*head = sp1 - p == 4 && !memcmp(p, "HEAD", 4);

	/* Header lines: name ":" OWS value OWS. Names are case-insensitive. */
	for (p = eol + 2; p < end; p = eol + 2) {
		const char *colon, *v, *ve;

		eol = khttpd_eol(p, end);
		colon = memchr(p, ':', eol - p);
		if (!colon || colon == p)
			return 400;
		for (q = p; q < colon; q++)	/* also rejects obs-fold lines */
			if (!khttpd_tchar(*q))
				return 400;
		v = colon + 1;
		ve = eol;
		khttpd_trim(&v, &ve);
		for (q = v; q < ve; q++)
			if (((unsigned char)*q < ' ' && *q != '\t') || *q == 0x7f)
				return 400;

		if (khttpd_is(p, colon, "host")) {
			hosts++;
		} else if (khttpd_is(p, colon, "content-length")) {
			if (v == ve)
				return 400;
			for (q = v; q < ve; q++) {
				if (!isdigit(*q))
					return 400;
				if (*q != '0')
					has_body = true;
			}
		} else if (khttpd_is(p, colon, "transfer-encoding")) {
			has_body = true;
		} else if (khttpd_is(p, colon, "connection")) {
			/* a comma-separated list of case-insensitive options */
			while (v < ve) {
				const char *t = v, *te = memchr(v, ',', ve - v) ?: ve;

				v = te + 1;
				khttpd_trim(&t, &te);
				close |= khttpd_is(t, te, "close");
				keep |= khttpd_is(t, te, "keep-alive");
			}
		}
	}
	if (hosts > 1 || (!http10 && !hosts))	/* RFC 9112 3.2: Host is a must */
		return 400;

	/* HTTP/1.1 keeps the connection by default, 1.0 closes; we do not read bodies */
	*keep_alive = !close && (!http10 || keep) && !has_body;
	if (!get && !*head)
		return 405;
	return has_body ? 413 : 200;
}

/* Drop the first n buffered bytes (keeping what follows, e.g. a pipelined request). */
static void khttpd_consume(struct khttpd_conn *c, size_t n)
{
	memmove(c->req, c->req + n, c->len - n);
	c->len -= n;
}

/* Answer requests on c until it should close. */
static void khttpd_serve(struct khttpd_conn *c)
{
	for (;;) {
		size_t i, hlen = 0;
		bool head, keep;
		int status, n;

		/* RFC 9112 2.2: ignore empty lines before a request line */
		for (i = 0; i + 1 < c->len && c->req[i] == '\r' && c->req[i + 1] == '\n'; i += 2)
			;
		khttpd_consume(c, i);

		for (i = 3; i < c->len && !hlen; i++)
			if (!memcmp(c->req + i - 3, "\r\n\r\n", 4))
				hlen = i + 1;
		if (hlen) {
			status = khttpd_parse(c->req, c->req + hlen - 2, &head, &keep);
			if (khttpd_reply(c, status, head, keep) || !keep)
				return;
			khttpd_consume(c, hlen);
			continue;
		}
		if (c->len == KHTTPD_REQ_MAX) {
			khttpd_reply(c, 431, false, false);
			return;
		}
		/* 0: the client closed; <0: idle timeout (-EAGAIN), shutdown or error */
		n = khttpd_recv(c->sock, c->req + c->len, KHTTPD_REQ_MAX - c->len);
		if (n <= 0)
			return;
		c->len += n;
	}
}

/*
 * Lingering close, as in Apache: send our FIN, then drop what the client still sends
 * (a request body, the rest of an oversized header) for up to a second, so that unread
 * data does not turn our close into a reset that destroys the response in flight.
 */
static void khttpd_linger(struct khttpd_conn *c)
{
	int n, total = 0;

	kernel_sock_shutdown(c->sock, SHUT_WR);
	WRITE_ONCE(c->sock->sk->sk_rcvtimeo, KHTTPD_LINGER_TIME);
	do {
		n = khttpd_recv(c->sock, c->req, KHTTPD_REQ_MAX);
		total += max(n, 0);
	} while (n > 0 && total < KHTTPD_LINGER_MAX);
}

static void khttpd_conn_work(struct work_struct *work)
{
	struct khttpd_conn *c = container_of(work, struct khttpd_conn, work);

	khttpd_serve(c);
	khttpd_linger(c);

	/* Once off the list, module exit no longer touches c->sock: it is ours to free. */
	mutex_lock(&khttpd_lock);
	list_del(&c->node);
	nr_conns--;
	mutex_unlock(&khttpd_lock);
	sock_release(c->sock);
	kfree(c);
}

/* Hand a freshly accepted socket to a work item, or close it if we are full. */
static void khttpd_start_conn(struct socket *sock)
{
	struct khttpd_conn *c = kzalloc(sizeof(*c), GFP_KERNEL);

	sock->sk->sk_rcvtimeo = KHTTPD_IDLE_TIMEOUT;	/* recv fails with -EAGAIN */
	sock->sk->sk_sndtimeo = KHTTPD_IDLE_TIMEOUT;
	tcp_sock_set_nodelay(sock->sk);		/* no Nagle delay for pipelined answers */

	mutex_lock(&khttpd_lock);
	if (!c || nr_conns >= max_conns) {
		mutex_unlock(&khttpd_lock);
		pr_warn_ratelimited("khttpd: %s, closing a new connection\n",
				    c ? "too many connections" : "out of memory");
		kfree(c);
		sock_release(sock);
		return;
	}
	c->sock = sock;
	INIT_WORK(&c->work, khttpd_conn_work);
	list_add_tail(&c->node, &khttpd_conns);
	nr_conns++;
	mutex_unlock(&khttpd_lock);
	queue_work(khttpd_wq, &c->work);
}

static int khttpd_accept_fn(void *unused)
{
	while (!kthread_should_stop()) {
		struct socket *sock;
		int err = kernel_accept(listener, &sock, 0);

		if (!err) {
			khttpd_start_conn(sock);
			continue;
		}
		/* Listener shut down (kthread_stop() follows) or out of memory: wait. */
		set_current_state(TASK_INTERRUPTIBLE);
		if (!kthread_should_stop())
			schedule_timeout(HZ / 10);
		__set_current_state(TASK_RUNNING);
	}
	return 0;
}

static int __init khttpd_init(void)
{
	struct sockaddr_in sin = {
		.sin_family = AF_INET,
		.sin_port = htons(port),
		.sin_addr = { htonl(INADDR_ANY) },
	};
	int err;

	if (!body || strlen(body) > KHTTPD_BODY_MAX) {
		pr_err("khttpd: body must be at most %d bytes\n", KHTTPD_BODY_MAX);
		return -EINVAL;
	}
	if (!port || !max_conns || max_conns > WQ_MAX_ACTIVE) {
		pr_err("khttpd: port must not be 0 and max_conns must be 1..%d\n", WQ_MAX_ACTIVE);
		return -EINVAL;
	}
	body_len = strlen(body);

	/* Unbound: each connection, blocking in recv, gets a worker; nr_conns bounds them. */
	khttpd_wq = alloc_workqueue("khttpd", WQ_UNBOUND, WQ_MAX_ACTIVE);
	if (!khttpd_wq)
		return -ENOMEM;
	err = sock_create_kern(&init_net, AF_INET, SOCK_STREAM, IPPROTO_TCP, &listener);
	if (err < 0)
		goto out_wq;
	sock_set_reuseaddr(listener->sk);	/* rebind at once after a reload */
	err = kernel_bind(listener, (struct sockaddr *)&sin, sizeof(sin));
	if (!err)
		err = kernel_listen(listener, max_conns);
	if (err < 0)
		goto out_sock;
	accept_task = kthread_run(khttpd_accept_fn, NULL, "khttpd");
	if (IS_ERR(accept_task)) {
		err = PTR_ERR(accept_task);
		goto out_sock;
	}
	pr_info("khttpd: serving 0.0.0.0:%u, at most %u connections\n", port, max_conns);
	return 0;

out_sock:
	sock_release(listener);
out_wq:
	destroy_workqueue(khttpd_wq);
	return err;
}

static void __exit khttpd_exit(void)
{
	struct khttpd_conn *c;

	/* No new connections: wake the accept thread out of kernel_accept, stop it. */
	kernel_sock_shutdown(listener, SHUT_RDWR);
	kthread_stop(accept_task);
	sock_release(listener);

	/* Make every open connection's recv/send fail, so its work item finishes. */
	mutex_lock(&khttpd_lock);
	list_for_each_entry(c, &khttpd_conns, node)
		kernel_sock_shutdown(c->sock, SHUT_RDWR);
	mutex_unlock(&khttpd_lock);

	/* Wait until every work item has closed its socket and returned. */
	destroy_workqueue(khttpd_wq);
	WARN_ON(!list_empty(&khttpd_conns));
	pr_info("khttpd: served %lld requests\n", (long long)atomic64_read(&served));
}

module_init(khttpd_init);
module_exit(khttpd_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("modvisor");
MODULE_DESCRIPTION("A small in-kernel HTTP/1.1 responder (modvisor sample module)");

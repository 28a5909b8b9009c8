// SPDX-License-Identifier: GPL-2.0
/*
 * khttpd: a tiny in-kernel request handler, the idea behind modvisor: a server whose
 * request handling lives in kernel space. A kernel thread listens on a TCP port and
 * answers every connection with one HTTP/1.0 response that counts the requests served.
 *
 * It is built out of tree against Debian's linux-headers and is not signed, so a guest
 * kernel booted with module.sig_enforce=1 refuses it, and so does modvisor's vetting.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/net.h>
#include <linux/in.h>
#include <linux/socket.h>
#include <linux/atomic.h>
#include <net/sock.h>

static unsigned short port = 8080;
module_param(port, ushort, 0444);
MODULE_PARM_DESC(port, "TCP port to listen on (default 8080)");

static struct socket *listener;
static struct task_struct *worker;
static atomic_t served = ATOMIC_INIT(0);

static void handle(struct socket *conn)
{
	char req[512];
	char resp[160];
	struct kvec vec = { .iov_base = req, .iov_len = sizeof(req) };
	struct msghdr msg = { };
	int len, n;

	kernel_recvmsg(conn, &msg, &vec, 1, sizeof(req), 0);
	n = atomic_inc_return(&served);
	len = scnprintf(resp, sizeof(resp),
			"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nkhttpd: request %d served in kernel space\n",
			n);
	vec.iov_base = resp;
	vec.iov_len = len;
	memset(&msg, 0, sizeof(msg));
	kernel_sendmsg(conn, &msg, &vec, 1, len);
}

static int serve(void *unused)
{
	while (!kthread_should_stop()) {
		struct socket *conn = NULL;
		int err = kernel_accept(listener, &conn, 0);

		if (err < 0) {
			if (kthread_should_stop())
				break;
			continue;
		}
		handle(conn);
		sock_release(conn);
	}
	return 0;
}

static int __init khttpd_init(void)
{
	struct sockaddr_in addr = {
		.sin_family = AF_INET,
		.sin_port = htons(port),
		.sin_addr = { htonl(INADDR_LOOPBACK) },
	};
	int err = sock_create_kern(&init_net, AF_INET, SOCK_STREAM, IPPROTO_TCP, &listener);

	if (err < 0)
		return err;
	sock_set_reuseaddr(listener->sk);
	err = kernel_bind(listener, (struct sockaddr *)&addr, sizeof(addr));
	if (!err)
		err = kernel_listen(listener, 16);
	if (err < 0)
		goto out_release;
	worker = kthread_run(serve, NULL, "khttpd");
	if (IS_ERR(worker)) {
		err = PTR_ERR(worker);
		goto out_release;
	}
	pr_info("khttpd: serving 127.0.0.1:%u from kernel space\n", port);
	return 0;

out_release:
	sock_release(listener);
	return err;
}

static void __exit khttpd_exit(void)
{
	kernel_sock_shutdown(listener, SHUT_RDWR);
	kthread_stop(worker);
	sock_release(listener);
	pr_info("khttpd: served %d requests\n", atomic_read(&served));
}

module_init(khttpd_init);
module_exit(khttpd_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("modvisor");
MODULE_DESCRIPTION("A tiny in-kernel HTTP request handler (modvisor sample module)");

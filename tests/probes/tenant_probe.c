/*
 * tenant_probe: run by the tests inside a guest's tenant context (as tenant root), it
 * tries one way around the module allow-list and prints "<what> <result>", where result
 * is the raw syscall return: 0 or more when the call worked, -errno when it was refused
 * (-1 EPERM, -13 EACCES, -16 EBUSY). No libc: a static, freestanding x86-64 program of a
 * few KiB, small enough to pass through an exec's stdin.
 *
 *   tenant_probe finit PATH     finit_module(open(PATH))
 *   tenant_probe init PATH      init_module(contents of PATH)
 *   tenant_probe ptrace PID     ptrace(PTRACE_ATTACH, PID)
 *   tenant_probe mem PID        open("/proc/PID/mem", O_RDWR)
 *   tenant_probe tiocsti PATH   ioctl(open(PATH), TIOCSTI, "x")
 *   tenant_probe bpf            bpf(BPF_PROG_LOAD, zeroed attributes)
 *   tenant_probe perf           perf_event_open(software clock, this process)
 *   tenant_probe kexec          kexec_load(0, 0, 0, 0)
 *   tenant_probe iopl           iopl(3)
 */

typedef unsigned long u64;

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

#define sys(n, a, b, c) sys6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)

enum {
	NR_read = 0, NR_write = 1, NR_open = 2, NR_ioctl = 16, NR_exit = 60,
	NR_ptrace = 101, NR_iopl = 172, NR_init_module = 175, NR_kexec_load = 246,
	NR_perf_event_open = 298, NR_finit_module = 313, NR_bpf = 321,
};

static char image[4 << 20];
static unsigned char attr[256];

static u64 len(const char *s) { u64 n = 0; while (s[n]) n++; return n; }
static int eq(const char *a, const char *b) { while (*a && *a == *b) a++, b++; return *a == *b; }

static void say(const char *what, long result)
{
	char buf[64];
	int i = sizeof buf;
	int neg = result < 0;
	unsigned long v = neg ? -result : result;
	buf[--i] = '\n';
	do { buf[--i] = '0' + v % 10; v /= 10; } while (v);
	if (neg) buf[--i] = '-';
	buf[--i] = ' ';
	sys(NR_write, 1, what, len(what));
	sys(NR_write, 1, buf + i, sizeof buf - i);
}

static long number(const char *s) { long n = 0; while (*s >= '0' && *s <= '9') n = n * 10 + (*s++ - '0'); return n; }

static long run(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "";
	const char *arg = argc > 2 ? argv[2] : "";
	if (eq(what, "finit")) {
		long fd = sys(NR_open, arg, 0, 0);
		return fd < 0 ? fd : sys(NR_finit_module, fd, "", 0);
	}
	if (eq(what, "init")) {
		long fd = sys(NR_open, arg, 0, 0), n = 0, r;
		if (fd < 0) return fd;
		while ((r = sys(NR_read, fd, image + n, sizeof image - n)) > 0) n += r;
		return sys(NR_init_module, image, n, "");
	}
	if (eq(what, "ptrace"))
		return sys6(NR_ptrace, 16 /* PTRACE_ATTACH */, number(arg), 0, 0, 0, 0);
	if (eq(what, "mem")) {
		char path[64] = "/proc/";
		u64 i = 6, j = 0;
		while (arg[j] && i < 40) path[i++] = arg[j++];
		for (const char *t = "/mem"; *t; t++) path[i++] = *t;
		path[i] = 0;
		return sys(NR_open, path, 2 /* O_RDWR */, 0);
	}
	if (eq(what, "tiocsti")) {
		long fd = sys(NR_open, arg, 2 | 0400 /* O_RDWR|O_NOCTTY */, 0);
		return fd < 0 ? fd : sys(NR_ioctl, fd, 0x5412 /* TIOCSTI */, "x");
	}
	if (eq(what, "bpf"))
		return sys(NR_bpf, 5 /* BPF_PROG_LOAD */, attr, 128);
	if (eq(what, "perf")) {
		attr[0] = 1; /* PERF_TYPE_SOFTWARE; config 0: cpu clock */
		attr[4] = 128; /* size */
		return sys6(NR_perf_event_open, (long)attr, 0, -1, -1, 0, 0);
	}
	if (eq(what, "kexec"))
		return sys6(NR_kexec_load, 0, 0, 0, 0, 0, 0);
	if (eq(what, "iopl"))
		return sys(NR_iopl, 3, 0, 0);
	return -22;
}

void probe_main(long *sp)
{
	int argc = (int)sp[0];
	char **argv = (char **)(sp + 1);
	say(argc > 1 ? argv[1] : "?", run(argc, argv));
	sys(NR_exit, 0, 0, 0);
}

__attribute__((naked)) void _start(void)
{
	__asm__ volatile("mov %rsp, %rdi\n\tand $-16, %rsp\n\tcall probe_main\n\thlt");
}

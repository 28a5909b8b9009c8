/* mvhttp, part 4 of 4 (after serve.c): the entry point. build.rs joins the parts. */

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

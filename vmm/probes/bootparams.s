# Reads the zero page it was given (%rsi) and reports the e820 map and command line.
        .globl _start
_start:
        mov %rsi, %r12
        lea head(%rip), %rsi
        call puts
        movzbl 0x1e8(%r12), %r13d       # boot_params.e820_entries
        lea 0x2d0(%r12), %r14           # boot_params.e820_table
1:      test %r13d, %r13d
        jz 2f
        lea e820(%rip), %rsi
        call puts
        mov (%r14), %rax
        call puthex
        mov $0x20, %al
        call putc
        mov 8(%r14), %rax
        call puthex
        mov $0x20, %al
        call putc
        mov 16(%r14), %eax
        call puthex
        mov $0x0a, %al
        call putc
        add $20, %r14
        dec %r13d
        jmp 1b
2:      lea cmd(%rip), %rsi
        call puts
        mov 0x228(%r12), %esi           # boot_params.hdr.cmd_line_ptr
        call puts
        mov $0x0a, %al
        call putc
        jmp halt
head:   .asciz "bootparams: reading the zero page\n"
e820:   .asciz "e820 "
cmd:    .asciz "cmdline: "

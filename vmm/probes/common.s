# Helpers shared by the 64-bit probe guests (entered in long mode, identity-mapped,
# with a stack; see vmm/src/probe.rs). COM1 is at 0x3f8.
        .code64
        .text
# puts: prints the NUL-terminated string at %rsi to COM1.
puts:
        push %rax
        push %rdx
        push %rsi
        mov $0x3f8, %dx
1:      lodsb
        test %al, %al
        jz 2f
        outb %al, %dx
        jmp 1b
2:      pop %rsi
        pop %rdx
        pop %rax
        ret
# putc: prints %al.
putc:
        push %rdx
        mov $0x3f8, %dx
        outb %al, %dx
        pop %rdx
        ret
# puthex: prints %rax as 16 hex digits.
puthex:
        push %rax
        push %rbx
        push %rcx
        push %rdx
        mov %rax, %rbx
        mov $16, %ecx
        mov $0x3f8, %dx
1:      rol $4, %rbx
        mov %bl, %al
        and $0xf, %al
        add $0x30, %al
        cmp $0x39, %al
        jbe 2f
        add $0x27, %al
2:      outb %al, %dx
        dec %ecx
        jnz 1b
        pop %rdx
        pop %rcx
        pop %rbx
        pop %rax
        ret
# halt: stops this vCPU for good (interrupts off).
halt:
        cli
1:      hlt
        jmp 1b

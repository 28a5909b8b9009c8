# Misbehaves: hammers unclaimed ports, string I/O, unbacked MMIO, then floods the console
# with 2 MiB, and halts.
        .globl _start
_start:
        lea start(%rip), %rsi
        call puts
        mov $0x400, %edx                # ports 0x400..0x13ff, every width
1:      inb %dx, %al
        outb %al, %dx
        inw %dx, %ax
        outw %ax, %dx
        inl %dx, %eax
        outl %eax, %dx
        inc %edx
        cmp $0x1400, %edx
        jne 1b
        mov $0x300000, %rdi             # 64 KiB of string input from an unclaimed port
        mov $0x10000, %rcx
        mov $0xcfc, %dx
        cld
        rep insb
        mov $0x300000, %rsi             # ... and out again
        mov $0x10000, %rcx
        mov $0x1234, %dx
        rep outsb
        mov $0xd0000000, %rbx           # unbacked addresses in the MMIO gap and above RAM
        mov $1024, %ecx
2:      mov (%rbx), %rax
        mov %rax, (%rbx)
        add $0x1008, %rbx
        dec %ecx
        jnz 2b
        mov $0x0b000000, %rbx
        mov $1024, %ecx
3:      mov (%rbx), %eax
        movb $0x5a, (%rbx)
        add $0x40, %rbx
        dec %ecx
        jnz 3b
        lea flood(%rip), %rsi
        call puts
        mov $0x100000, %rsi             # 2 MiB of console output
        mov $0x200000, %rcx
        mov $0x3f8, %dx
        rep outsb
        lea done(%rip), %rsi
        call puts
        jmp halt
start:  .asciz "hostile: start\n"
flood:  .asciz "hostile: flood\n"
done:   .asciz "\nhostile: done\n"

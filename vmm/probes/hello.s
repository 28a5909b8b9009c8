# Prints a line on COM1 and halts.
        .globl _start
_start:
        lea msg(%rip), %rsi
        call puts
        jmp halt
msg:    .asciz "modvisor probe: hello from the guest\n"

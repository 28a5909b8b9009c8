# Announces itself, then faults with no usable IDT: #UD -> #DF -> triple fault.
        .globl _start
_start:
        lea msg(%rip), %rsi
        call puts
        lidt nullidt(%rip)
        ud2
        jmp halt
msg:    .asciz "triple: about to triple fault\n"
nullidt: .word 0
        .quad 0

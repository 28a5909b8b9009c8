# Echoes every byte received on COM2 (0x2f8) back to COM2, until it receives 'q'.
        .globl _start
_start:
        lea ready(%rip), %rsi
        call puts
next:   mov $0x2fd, %dx                 # line status register
1:      inb %dx, %al
        test $1, %al                    # data ready
        jz 1b
        mov $0x2f8, %dx
        inb %dx, %al
        mov %al, %bl
        cmp $0x71, %bl                  # 'q'
        je done
        mov $0x2fd, %dx
2:      inb %dx, %al
        test $0x20, %al                 # transmit holding register empty
        jz 2b
        mov $0x2f8, %dx
        mov %bl, %al
        outb %al, %dx
        jmp next
done:   lea bye(%rip), %rsi
        call puts
        jmp halt
ready:  .asciz "echo: ready\n"
bye:    .asciz "echo: done\n"

# A PVH guest (32-bit entry through the Xen ELF note, as QEMU and modvisor vmm both
# support): prints one line on COM1, then idles with interrupts on (it stays running).
# It has no IDT, and QEMU's firmware leaves the PIT ticking, so it first masks both 8259
# PICs: an unmasked timer interrupt would triple-fault it.
        .section .note.pvh, "a", @note
        .align 4
        .long 4                         # name size
        .long 4                         # descriptor size
        .long 18                        # XEN_ELFNOTE_PHYS32_ENTRY
        .asciz "Xen"
        .long pvh_start
        .text
        .code32
        .globl _start
_start:
pvh_start:
        mov $msg, %esi
        mov $(msg_end - msg), %ecx
        mov $0x3f8, %dx
        cld
        rep outsb
        mov $0xff, %al
        out %al, $0x21                  # master PIC: mask every line
        out %al, $0xa1                  # slave PIC: mask every line
1:      sti
        hlt
        jmp 1b
msg:    .ascii "modvisor probe: ready\n"
msg_end:

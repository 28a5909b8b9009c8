# The bootstrap vCPU reports its APIC id and the processors of the MP table, then starts
# the others with INIT/SIPI through a real-mode trampoline copied to 0x10000; each reports
# its LAPIC and CPUID APIC ids.
        .globl _start
_start:
        lea bspmsg(%rip), %rsi
        call puts
        call report_ids
        # The MP table: floating pointer at 0x9fc00 -> configuration table.
        mov $0x9fc00, %rbx
        cmpl $0x5f504d5f, (%rbx)        # "_MP_"
        jne nomp
        mov 4(%rbx), %ebx               # physical pointer
        movzwl 34(%rbx), %ecx           # entry count
        lea 44(%rbx), %rbx
        xor %r13d, %r13d                # processors found
1:      test %ecx, %ecx
        jz 4f
        cmpb $0, (%rbx)
        jne 2f
        lea mpcpu(%rip), %rsi
        call puts
        movzbl 1(%rbx), %eax
        call puthex
        mov $0x0a, %al
        call putc
        inc %r13d
        add $20, %rbx
        jmp 3f
2:      add $8, %rbx
3:      dec %ecx
        jmp 1b
4:      # Copy the trampoline and start the application processors.
        lea tramp_start(%rip), %rsi
        mov $0x10000, %rdi
        mov $(tramp_end - tramp_start), %rcx
        cld
        rep movsb
        mov $0xfee00000, %rbx
        movl $0, 0x310(%rbx)
        movl $0x000c4500, 0x300(%rbx)   # INIT to all but self
        mov $2000, %ecx
5:      dec %ecx
        jnz 5b
        movl $0, 0x310(%rbx)
        movl $0x000c4610, 0x300(%rbx)   # SIPI, vector 0x10 -> 0x10000
        dec %r13d                       # the others
        mov $20000000, %ecx
6:      cmp ap_count(%rip), %r13d
        je 7f
        pause
        dec %ecx
        jnz 6b
        call lock
        lea timeout(%rip), %rsi
        call puts
        call unlock
        jmp halt
7:      call lock
        lea allmsg(%rip), %rsi
        call puts
        call unlock
        jmp halt
nomp:   lea nompmsg(%rip), %rsi
        call puts
        jmp halt

# report_ids: prints "apic=<LAPIC id> cpuid=<CPUID.1 EBX[31:24]>\n".
report_ids:
        lea apicmsg(%rip), %rsi
        call puts
        mov $0xfee00000, %rbx
        mov 0x20(%rbx), %eax
        shr $24, %eax
        call puthex
        lea cpuidmsg(%rip), %rsi
        call puts
        mov $1, %eax
        cpuid
        mov %ebx, %eax
        shr $24, %eax
        call puthex
        mov $0x0a, %al
        call putc
        ret

lock:   mov $1, %eax
        xchg %eax, print_lock(%rip)
        test %eax, %eax
        jnz lock
        ret
unlock: movl $0, print_lock(%rip)
        ret

ap_main:
        mov $1, %eax
        lock xadd %eax, stack_idx(%rip)
        shl $12, %eax
        add $0x200000, %eax
        mov %rax, %rsp
        call lock
        lea apmsg(%rip), %rsi
        call puts
        call report_ids
        call unlock
        lock incl ap_count(%rip)
        jmp halt

        .code16
tramp_start:
        cli
        mov %cs, %ax
        mov %ax, %ds
        lgdtl (tgdt_ptr - tramp_start)
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $0x08, $(0x10000 + tramp32 - tramp_start)
        .code32
tramp32:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov %cr4, %eax
        or $0x20, %eax                  # PAE
        mov %eax, %cr4
        mov $0x9000, %eax               # the VMM's identity page tables
        mov %eax, %cr3
        mov $0xc0000080, %ecx           # EFER.LME
        rdmsr
        or $0x100, %eax
        wrmsr
        mov %cr0, %eax
        or $0x80000000, %eax            # paging
        mov %eax, %cr0
        ljmp $0x18, $(0x10000 + tramp64 - tramp_start)
        .code64
tramp64:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        movabs $ap_main, %rax
        jmp *%rax
        .align 8
tgdt:   .quad 0
        .quad 0x00cf9b000000ffff        # 32-bit code
        .quad 0x00cf93000000ffff        # data
        .quad 0x00af9b000000ffff        # 64-bit code
tgdt_ptr:
        .word 31
        .long 0x10000 + tgdt - tramp_start
tramp_end:

bspmsg: .asciz "smp: bsp "
apmsg:  .asciz "smp: ap "
apicmsg: .asciz "apic="
cpuidmsg: .asciz " cpuid="
mpcpu:  .asciz "mptable cpu apic="
allmsg: .asciz "smp: all cpus reported\n"
timeout: .asciz "smp: timeout waiting for the APs\n"
nompmsg: .asciz "smp: no MP table\n"
        .data
        .align 8
print_lock: .long 0
ap_count: .long 0
stack_idx: .long 1

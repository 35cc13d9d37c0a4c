/* The network-boot test workload: runs at CPL 0 after the firmware's handover (the
 * VMM's identity map), prints one line on COM1 and powers the VM off. Linked in the
 * firmware's workload window (0x2000000, see pxe-firmware/firmware/src/elf.rs). */
    .code64
    .text
    .global _start
_start:
    lea msg(%rip), %rsi
1:  movb (%rsi), %al
    test %al, %al
    jz 2f
    mov $0x3f8, %dx
    out %al, %dx
    inc %rsi
    jmp 1b
2:  mov $0x604, %dx
    mov $0x2000, %ax
    out %ax, %dx
3:  cli
    hlt
    jmp 3b

    .section .rodata
msg:
    .asciz "tvp-workload: hello from the tenant workload\n"

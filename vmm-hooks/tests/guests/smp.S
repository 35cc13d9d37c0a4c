/* Starts the application processor (APIC id 1) the way an operating system does:
 * copies a real-mode trampoline below 1 MiB, sends INIT and a start-up IPI through the
 * in-kernel LAPIC (xAPIC MMIO at 0xfee00000), and waits for the AP to set a flag. The
 * AP prints "AP" and its APIC ids from CPUID on COM1 (port exits on the second vCPU
 * thread), sets the flag and halts with interrupts off. The BSP then prints "smp ok" and powers off, or prints
 * "no AP" and powers off if the flag never comes. */
#include "lib.S"

#define TRAMPOLINE 0x40000
#define AP_FLAG    0x40100
#define LAPIC      0xfee00000

main:
    /* The BSP's own CPUID as tvp-vmm normalised it: "cpu a=<APIC id> h=<hypervisor>
     * n=<logical processors>". */
    mov $'c', %al
    call putc
    mov $'p', %al
    call putc
    mov $'u', %al
    call putc
    mov $1, %eax
    cpuid
    push %rcx
    push %rbx
    shr $24, %ebx
    mov $'a', %al
    call print_field
    pop %rbx
    shr $16, %ebx
    and $0xff, %ebx
    mov $'n', %al
    call print_field
    pop %rbx
    shr $31, %ebx
    mov $'h', %al
    call print_field
    mov $'\n', %al
    call putc
    lea ap_tramp(%rip), %rsi
    mov $TRAMPOLINE, %edi
    mov $(ap_tramp_end - ap_tramp), %ecx
    rep movsb
    movb $0, AP_FLAG
    mov $LAPIC, %ebx
    movl $0x1ff, 0xf0(%rbx)            /* SVR: APIC software-enabled, vector 0xff */
    movl $0x01000000, 0x310(%rbx)      /* ICR high: destination APIC id 1 */
    movl $0x00004500, 0x300(%rbx)      /* ICR low: INIT, assert */
    movl $0x01000000, 0x310(%rbx)
    movl $(0x00004600 | (TRAMPOLINE >> 12)), 0x300(%rbx)  /* start-up IPI */
#ifdef AP_POWER_OFF
5:  jmp 5b                             /* the AP ends the VM */
#endif
    mov $500000, %ecx                  /* about a second of emulated CPL 0 here */
1:  cmpb $1, AP_FLAG
    je 2f
    pause
    dec %ecx
    jnz 1b
    lea no_ap(%rip), %rsi
    call puts
    jmp power_off
2:  lea smp_ok(%rip), %rsi
    call puts
    jmp power_off

/* puts: rsi = NUL-terminated string. */
puts:
    movb (%rsi), %al
    test %al, %al
    jz 3f
    call putc
    inc %rsi
    jmp puts
3:  ret

smp_ok: .asciz "smp ok\n"
no_ap:  .asciz "no AP\n"

/* The AP's first instructions, in real mode at CS:IP = (TRAMPOLINE >> 4):0. */
    .code16
ap_tramp:
    /* "AP <leaf 1 APIC id> <leaf 0xb x2APIC id>", each one decimal digit. */
    mov $1, %eax
    cpuid
    shr $24, %ebx
    mov $0xb, %eax
    xor %ecx, %ecx
    cpuid
    mov %edx, %ecx
    mov $SERIAL_PORT, %dx
    mov $'A', %al
    out %al, %dx
    mov $'P', %al
    out %al, %dx
    mov $' ', %al
    out %al, %dx
    mov %bl, %al
    add $'0', %al
    out %al, %dx
    mov $' ', %al
    out %al, %dx
    mov %cl, %al
    add $'0', %al
    out %al, %dx
    mov $'\n', %al
    out %al, %dx
    movb $1, %cs:(AP_FLAG - TRAMPOLINE)
#ifdef AP_POWER_OFF
    mov $POWER_PORT, %dx
    mov $POWER_OFF_VALUE, %ax
    out %ax, %dx
#endif
4:  cli
    hlt
    jmp 4b
ap_tramp_end:
    .code64

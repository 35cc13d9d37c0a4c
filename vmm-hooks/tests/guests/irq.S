/* Interrupts through the in-kernel irqchip, from a CPL 0 guest with its own IDT:
 *  1. the LAPIC timer (one-shot, vector 0x40) wakes a `sti; hlt` (KVM halts the vCPU in
 *     the kernel and the timer wakes it): prints "lapic timer ok";
 *  2. the in-kernel PIT (channel 0, mode 2) through the 8259 PIC (IRQ 0 -> vector 0x20)
 *     and the BSP's LINT0 (ExtINT): prints "pit ok";
 *  3. COM1's THR-empty interrupt through tvp-vmm's irqfd (IRQ 4 -> vector 0x24):
 *     prints "com1 irq ok".
 * Each step that sees no interrupt prints "<step> MISSING" instead. Then powers off. */
#include "lib.S"

#define IDT        0x40000
#define LAPIC      0xfee00000
#define LAPIC_HITS 0x41000
#define PIT_HITS   0x41004
#define COM1_HITS  0x41008

main:
    movl $0, LAPIC_HITS
    movl $0, PIT_HITS
    movl $0, COM1_HITS
    lea lapic_isr(%rip), %rax
    mov $(IDT + 0x40 * 16), %edi
    call set_gate
    lea pit_isr(%rip), %rax
    mov $(IDT + 0x20 * 16), %edi
    call set_gate
    lea com1_isr(%rip), %rax
    mov $(IDT + 0x24 * 16), %edi
    call set_gate
    sub $16, %rsp
    movw $(0x41 * 16 - 1), (%rsp)
    movq $IDT, 2(%rsp)
    lidt (%rsp)
    add $16, %rsp

    /* 1. LAPIC timer. */
    mov $LAPIC, %ebx
    movl $0x1ff, 0xf0(%rbx)            /* SVR: software-enabled */
    movl $0xb, 0x3e0(%rbx)             /* divide by 1 */
    movl $0x40, 0x320(%rbx)            /* LVT timer: one-shot, vector 0x40 */
    movl $200000, 0x380(%rbx)          /* initial count */
    sti
    hlt
    cli
    lea s_lapic(%rip), %rsi
    mov $LAPIC_HITS, %edi
    call report

    /* 2. PIT through the PIC: ICW1..4, IRQ 0 at vector 0x20, only IRQ 0 unmasked. */
    mov $0x11, %al
    out %al, $0x20
    out %al, $0xa0
    mov $0x20, %al
    out %al, $0x21
    mov $0x28, %al
    out %al, $0xa1
    mov $0x04, %al
    out %al, $0x21
    mov $0x02, %al
    out %al, $0xa1
    mov $0x01, %al
    out %al, $0x21
    out %al, $0xa1
    mov $0xfe, %al
    out %al, $0x21
    mov $0xff, %al
    out %al, $0xa1
    mov $0x34, %al                     /* channel 0, lobyte/hibyte, mode 2 */
    out %al, $0x43
    mov $0x00, %al
    out %al, $0x40
    mov $0x10, %al                     /* 0x1000: about 290 Hz */
    out %al, $0x40
    mov $PIT_HITS, %edi
    call wait_hit
    mov $0xff, %al                     /* PIC: everything masked again */
    out %al, $0x21
    lea s_pit(%rip), %rsi
    mov $PIT_HITS, %edi
    call report

    /* 3. COM1: THR-empty interrupt enabled, IRQ 4 unmasked, one byte written. */
    mov $0xef, %al
    out %al, $0x21
    mov $(SERIAL_PORT + 1), %dx
    mov $0x02, %al
    out %al, %dx
    mov $'.', %al
    call putc
    mov $COM1_HITS, %edi
    call wait_hit
    mov $(SERIAL_PORT + 1), %dx
    xor %eax, %eax
    out %al, %dx
    mov $'\n', %al
    call putc
    lea s_com1(%rip), %rsi
    mov $COM1_HITS, %edi
    call report
    jmp power_off

/* set_gate: rax = handler, rdi = gate: 64-bit interrupt gate, DPL 0, selector 0x08. */
set_gate:
    mov %ax, (%rdi)
    movw $0x08, 2(%rdi)
    movw $0x8e00, 4(%rdi)
    shr $16, %rax
    mov %ax, 6(%rdi)
    shr $16, %rax
    mov %eax, 8(%rdi)
    movl $0, 12(%rdi)
    ret

/* wait_hit: spins with interrupts enabled until the counter at rdi is non-zero or
 * about 300k turns have passed. */
wait_hit:
    mov $300000, %ecx
    sti
1:  cmpl $0, (%rdi)
    jne 2f
    dec %ecx
    jnz 1b
2:  cli
    ret

/* report: rsi = step name; prints "<name> ok" or "<name> MISSING" after the counter at
 * rdi. */
report:
    call puts
    cmpl $0, (%rdi)
    je 3f
    lea s_ok(%rip), %rsi
    jmp puts
3:  lea s_missing(%rip), %rsi
    jmp puts

puts:
    movb (%rsi), %al
    test %al, %al
    jz 4f
    call putc
    inc %rsi
    jmp puts
4:  ret

lapic_isr:
    incl LAPIC_HITS
    push %rbx
    mov $LAPIC, %ebx
    movl $0, 0xb0(%rbx)                /* EOI */
    pop %rbx
    iretq

pit_isr:
    incl PIT_HITS
    push %rax
    mov $0x20, %al                     /* PIC EOI */
    out %al, $0x20
    pop %rax
    iretq

com1_isr:
    incl COM1_HITS
    push %rax
    push %rdx
    mov $(SERIAL_PORT + 2), %dx        /* IIR read acknowledges THR empty */
    in %dx, %al
    mov $0x20, %al
    out %al, $0x20
    pop %rdx
    pop %rax
    iretq

s_lapic:   .asciz "lapic timer"
s_pit:     .asciz "pit"
s_com1:    .asciz "com1 irq"
s_ok:      .asciz " ok\n"
s_missing: .asciz " MISSING\n"

/* virtio-net's interrupt through the IOAPIC, from a CPL 0 guest with its own IDT
 * (GSI 5 -> vector 0x35, the 8259s masked), after the handover (the workload phase;
 * vnet_init's reset puts the device in interrupt mode). The receive queue is set up
 * and DRIVER_OK written; then the guest offers a buffer
 * and spins with interrupts on, touching no device register, until its interrupt
 * handler ran: the frame the test keeps sending on the TAP side can only arrive
 * through tvp-vmm's receive thread. Twice (the second buffer offered without a
 * notify). Prints " i=<interrupts> u=<receive used index>" after each round.
 * With POLLED defined it does not hand over: the device stays polled (the receive
 * thread fills the ring as frames arrive, as for the firmware) and no interrupt
 * comes. */
#include "lib.S"
#include "vnet.S"

#define IDT       0x40000
#define LAPIC     0xfee00000
#define IOAPIC    0xfec00000
#define NET_HITS  0x41000
#define NET_VEC   0x35
#define RX_BUF1   0x410000
#define RX_BUF2   0x411000
#define R_INT_ACK 0x64

main:
#ifndef POLLED
    call attest
#endif
    movl $0, NET_HITS
    mov $0xff, %al                     /* both 8259s masked: the IOAPIC only */
    out %al, $0x21
    out %al, $0xa1
    lea net_isr(%rip), %rax
    mov $(IDT + NET_VEC * 16), %edi
    call set_gate
    sub $16, %rsp
    movw $((NET_VEC + 1) * 16 - 1), (%rsp)
    movq $IDT, 2(%rsp)
    lidt (%rsp)
    add $16, %rsp
    mov $LAPIC, %ebx
    movl $0x1ff, 0xf0(%rbx)            /* SVR: software-enabled */
    mov $IOAPIC, %ebx                  /* pin 5: vector 0x35, fixed, edge, high, unmasked, to APIC 0 */
    movl $0x1a, (%rbx)
    movl $NET_VEC, 0x10(%rbx)
    movl $0x1b, (%rbx)
    movl $0, 0x10(%rbx)

    call vnet_init
    xor %edi, %edi
    mov $RX_DESC, %esi
    mov $RX_AVAIL, %edx
    mov $RX_USED, %r8d
    call vnet_queue
    call vnet_go

    /* Round 1: buffer 1 (descriptor 0), no notify. */
    mov $RX_BUF1, %rdi
    call vnet_rx_offer
    mov $1, %esi
    call wait_irq
    call report

    /* Round 2: buffer 2 (descriptor 1), no notify. */
    movq $RX_BUF2, RX_DESC + 16
    movl $2048, RX_DESC + 24
    movw $2, RX_DESC + 28
    movw $0, RX_DESC + 30
    movw $1, RX_AVAIL + 6
    movw $2, RX_AVAIL + 2
    mov $2, %esi
    call wait_irq
    call report
    mov $'\n', %al
    call putc
    jmp power_off

/* wait_irq: spins with interrupts enabled (no device access) until the handler ran esi
 * times or about 2 million turns have passed. */
wait_irq:
    mov $2000000, %ecx
    sti
1:  cmp NET_HITS, %esi
    jbe 2f
    dec %ecx
    jnz 1b
2:  cli
    ret

/* report: " i=<interrupts> u=<receive used index>" */
report:
    mov NET_HITS, %ebx
    mov $'i', %al
    call print_field
    movzwl RX_USED + 2, %ebx
    mov $'u', %al
    call print_field
    ret

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

/* The device's interrupt: count it, acknowledge what InterruptStatus says, EOI. */
net_isr:
    push %rax
    push %rbx
    push %rcx
    incl NET_HITS
    mov $R_INT_STATUS, %ecx
    call vnet_r
    mov $R_INT_ACK, %ecx
    call vnet_w
    mov $LAPIC, %ebx
    movl $0, 0xb0(%rbx)                /* EOI */
    pop %rcx
    pop %rbx
    pop %rax
    iretq

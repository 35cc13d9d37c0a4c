/* Shared ring-0 helpers for the test guests: plain x86-64 integer code, no SIMD.
 * Entered in long mode at _start with RSP = 0x8000 (see tvp_abi::layout).
 * abi.inc is generated from tvp-abi's constants by tests/common/mod.rs. */
#include "abi.inc"

    .code64
    .text
    .globl _start
_start:
    mov $BOOT_TIMER_PORT, %dx
    xor %eax, %eax              /* milestone 0: first instruction */
    out %al, %dx
    jmp main

/* putc: al -> serial */
putc:
    push %rdx
    mov $SERIAL_PORT, %dx
    out %al, %dx
    pop %rdx
    ret

/* print_hex32: eax as 8 lowercase hex digits */
print_hex32:
    push %rbx
    push %rcx
    mov %eax, %ebx
    mov $8, %ecx
1:  rol $4, %ebx
    mov %ebx, %eax
    and $0xf, %eax
    cmp $10, %eax
    jb 2f
    add $('a' - 10), %eax
    jmp 3f
2:  add $'0', %eax
3:  call putc
    dec %ecx
    jnz 1b
    pop %rcx
    pop %rbx
    ret

/* print_field: al = tag letter, ebx = value -> " x=XXXXXXXX" */
print_field:
    push %rax
    mov $' ', %al
    call putc
    pop %rax
    call putc
    mov $'=', %al
    call putc
    mov %ebx, %eax
    call print_hex32
    ret

/* mbox_call: edi = command, esi = payload length (payload already at MBOX_REQ+16).
 * Writes a well-formed header, rings, and prints the response. */
mbox_call:
    movl $REQ_MAGIC, MBOX_REQ
    movw $MBOX_VERSION, MBOX_REQ + 4
    movw %di, MBOX_REQ + 6
    movl %esi, MBOX_REQ + 8
    movl $0, MBOX_REQ + 12
/* ring: rings the doorbell with whatever is in the request block, prints
 * "R c=<command> s=<status> d=<detail> l=<payload_len> p=<first payload dword>\n" */
ring:
    movl $0xffffffff, MBOX_RESP + 8     /* poison the status: must be overwritten */
    mov $DOORBELL_PORT, %dx
    out %al, %dx
    mov $'R', %al
    call putc
    movzwl MBOX_RESP + 6, %ebx
    mov $'c', %al
    call print_field
    movl MBOX_RESP + 8, %ebx
    mov $'s', %al
    call print_field
    movl MBOX_RESP + 20, %ebx
    mov $'d', %al
    call print_field
    movl MBOX_RESP + 12, %ebx
    mov $'l', %al
    call print_field
    movl MBOX_RESP + 32, %ebx
    mov $'p', %al
    call print_field
    mov $'\n', %al
    call putc
    ret

/* fill: rdi = dest, ecx = count, al = byte */
fill:
    push %rdi
    push %rcx
1:  test %ecx, %ecx
    jz 2f
    mov %al, (%rdi)
    inc %rdi
    dec %ecx
    jmp 1b
2:  pop %rcx
    pop %rdi
    ret

/* attest: the happy attestation path, each step printed by mbox_call: tunnel
 * measurement (32 x 0xab), quote (16-byte nonce, 0x11), handover (digest 32 x 0xcd). */
attest:
    mov $MBOX_REQ + 16, %rdi
    mov $32, %ecx
    mov $0xab, %al
    call fill
    mov $CMD_TUNNEL, %edi
    mov $32, %esi
    call mbox_call

    mov $MBOX_REQ + 16, %rdi
    mov $16, %ecx
    mov $0x11, %al
    call fill
    mov $CMD_QUOTE, %edi
    mov $16, %esi
    call mbox_call

    mov $MBOX_REQ + 16, %rdi
    mov $32, %ecx
    mov $0xcd, %al
    call fill
    mov $CMD_HANDOVER, %edi
    mov $32, %esi
    call mbox_call
    ret

/* puts_done: prints "done\n" */
puts_done:
    mov $'d', %al
    call putc
    mov $'o', %al
    call putc
    mov $'n', %al
    call putc
    mov $'e', %al
    call putc
    mov $'\n', %al
    call putc
    ret

power_off:
    mov $POWER_PORT, %dx
    mov $POWER_OFF_VALUE, %ax
    out %ax, %dx
1:  hlt
    jmp 1b

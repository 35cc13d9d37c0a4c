/* Drives the virtio-blk disk (virtio-mmio at tvp_abi::layout::VIRTIO_BLK_MMIO_GPA,
 * polled: interrupts stay disabled) through one 4-entry queue in RAM at 4 MiB:
 * prints " q=<QUEUE_READY read back>", then per request "R<n> s=<status byte>
 * u=<used length>" and, for reads, the first 32 bytes of the 512-byte buffer (zeroed
 * before each request; dots for zeros). Requests: read sector 0, read sector 8, read
 * sector 16, write sector 0, read sector 1000000 (past the end), GET_ID. */
#include "lib.S"
#define BLK_BASE 0xd0001000
#define Q_DESC  0x400000
#define Q_AVAIL 0x401000
#define Q_USED  0x402000
#define HDR     0x403000
#define STAT    0x403100
#define BUF     0x404000

/* blk_w: ecx = register offset, eax = value */
blk_w:
    push %rbx
    mov $BLK_BASE, %rbx
    add %rcx, %rbx
    movl %eax, (%rbx)
    pop %rbx
    ret

/* blk_r: ecx = register offset -> eax */
blk_r:
    push %rbx
    mov $BLK_BASE, %rbx
    add %rcx, %rbx
    movl (%rbx), %eax
    pop %rbx
    ret

main:
    mov $Q_DESC, %rdi
    mov $0x5000, %ecx
    xor %eax, %eax
    call fill
    mov $0x70, %ecx              /* STATUS: reset, ACKNOWLEDGE | DRIVER */
    xor %eax, %eax
    call blk_w
    mov $3, %eax
    call blk_w
    mov $0x24, %ecx              /* VERSION_1 */
    mov $1, %eax
    call blk_w
    mov $0x20, %ecx
    mov $1, %eax
    call blk_w
    mov $0x24, %ecx              /* F_RO */
    xor %eax, %eax
    call blk_w
    mov $0x20, %ecx
    mov $0x20, %eax
    call blk_w
    mov $0x70, %ecx              /* FEATURES_OK */
    mov $11, %eax
    call blk_w
    mov $0x30, %ecx              /* queue 0: 4 entries at the rings */
    xor %eax, %eax
    call blk_w
    mov $0x38, %ecx
    mov $4, %eax
    call blk_w
    mov $0x80, %ecx
    mov $Q_DESC, %eax
    call blk_w
    mov $0x90, %ecx
    mov $Q_AVAIL, %eax
    call blk_w
    mov $0xa0, %ecx
    mov $Q_USED, %eax
    call blk_w
    mov $0x44, %ecx
    mov $1, %eax
    call blk_w
    call blk_r
    mov %eax, %ebx
    mov $'q', %al
    call print_field
    mov $'\n', %al
    call putc
    mov $0x70, %ecx              /* DRIVER_OK */
    mov $15, %eax
    call blk_w

    xor %edi, %edi
    xor %esi, %esi
    call blk_req
    xor %edi, %edi
    mov $8, %esi
    call blk_req
    xor %edi, %edi
    mov $16, %esi
    call blk_req
    mov $1, %edi
    xor %esi, %esi
    call blk_req
    xor %edi, %edi
    mov $1000000, %esi
    call blk_req
    mov $8, %edi
    xor %esi, %esi
    call blk_req
    call puts_done
    jmp power_off

/* blk_req: edi = request type, esi = sector. Header, buffer (device-writable unless
 * a write), status byte; offers head 0, notifies, polls the used index, prints. */
blk_req:
    push %rbx
    push %rdi
    mov $BUF, %rdi
    mov $512, %ecx
    mov $0x2e, %al               /* '.': what the device did not write */
    call fill
    pop %rdi
    movl %edi, HDR
    movl $0, HDR + 4
    mov %rsi, HDR + 8
    movb $0xff, STAT
    movq $HDR, Q_DESC
    movl $16, Q_DESC + 8
    movw $1, Q_DESC + 12
    movw $1, Q_DESC + 14
    movq $BUF, Q_DESC + 16
    movl $512, Q_DESC + 24
    movw $3, Q_DESC + 28         /* NEXT | WRITE */
    cmp $1, %edi
    jne 1f
    movw $1, Q_DESC + 28         /* a write: the buffer is device-readable */
1:  cmp $8, %edi
    jne 2f
    movl $20, Q_DESC + 24
2:  movw $2, Q_DESC + 30
    movq $STAT, Q_DESC + 32
    movl $1, Q_DESC + 40
    movw $2, Q_DESC + 44         /* WRITE */
    movw $0, Q_DESC + 46
    movzwl Q_AVAIL + 2, %ebx
    mov %ebx, %ecx
    and $3, %ecx
    movw $0, Q_AVAIL + 4(,%rcx,2)
    inc %ebx
    movw %bx, Q_AVAIL + 2
    mov $0x50, %ecx              /* QUEUE_NOTIFY */
    xor %eax, %eax
    call blk_w
    mov $1000000, %ecx
3:  movzwl Q_USED + 2, %eax
    cmp %bx, %ax
    je 4f
    dec %ecx
    jnz 3b
4:  mov $'R', %al
    call putc
    mov %edi, %eax
    add $'0', %al
    call putc
    movzbl STAT, %ebx
    mov $'s', %al
    call print_field
    movzwl Q_USED + 2, %ebx
    dec %ebx
    and $3, %ebx
    mov Q_USED + 8(,%rbx,8), %ebx
    mov $'u', %al
    call print_field
    mov $' ', %al
    call putc
    mov $BUF, %rsi
    mov $32, %ecx
5:  mov (%rsi), %al
    test %al, %al
    jnz 6f
    mov $'_', %al
6:  call putc
    inc %rsi
    dec %ecx
    jnz 5b
    mov $'\n', %al
    call putc
    pop %rbx
    ret

/* virtio-blk (virtio-mmio v2) driver helpers for the test guests, after lib.S.
 * BLK_BASE is tvp_abi::layout::VIRTIO_BLK_MMIO_GPA (tests/blk.rs checks it). One
 * 4-entry queue in RAM at 4 MiB; requests are polled (interrupts stay disabled). */
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


/* blk_init: reset, VERSION_1 and F_RO, FEATURES_OK, queue 0, prints " q=<QUEUE_READY
 * read back>\n", DRIVER_OK */
blk_init:
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

    ret

/* blk_submit: edi = request type, rsi = sector, edx = buffer length (buffer at BUF,
 * device-writable unless a write); header, buffer, status byte as one chain at head 0;
 * notifies and polls the used index. Returns the status byte in eax. */
blk_submit:
    push %rbx
    push %rcx
    movl %edi, HDR
    movl $0, HDR + 4
    mov %rsi, HDR + 8
    movb $0xff, STAT
    movq $HDR, Q_DESC
    movl $16, Q_DESC + 8
    movw $1, Q_DESC + 12
    movw $1, Q_DESC + 14
    movq $BUF, Q_DESC + 16
    movl %edx, Q_DESC + 24
    movw $3, Q_DESC + 28         /* NEXT | WRITE */
    cmp $1, %edi
    jne 1f
    movw $1, Q_DESC + 28         /* a write: the buffer is device-readable */
1:  movw $2, Q_DESC + 30
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
    mov $100000000, %ecx
2:  movzwl Q_USED + 2, %eax
    cmp %bx, %ax
    je 3f
    dec %ecx
    jnz 2b
3:  movzbl STAT, %eax
    pop %rcx
    pop %rbx
    ret

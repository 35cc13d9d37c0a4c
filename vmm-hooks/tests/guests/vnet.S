/* virtio-net (virtio-mmio v2) driver helpers for the test guests, after lib.S.
 * VNET_BASE is tvp_abi::layout::VIRTIO_NET_MMIO_GPA (tests/netguard.rs checks it).
 * Rings (4 entries each) sit in RAM at 4 MiB, outside the guest's image. */
#define VNET_BASE 0xd0000000
#define TX_DESC  0x400000
#define TX_AVAIL 0x401000
#define TX_USED  0x402000
#define RX_DESC  0x404000
#define RX_AVAIL 0x405000
#define RX_USED  0x406000
#define R_DRV_FEATURES 0x20
#define R_DRV_FEATURES_SEL 0x24
#define R_QUEUE_SEL 0x30
#define R_QUEUE_NUM 0x38
#define R_QUEUE_READY 0x44
#define R_QUEUE_NOTIFY 0x50
#define R_INT_STATUS 0x60
#define R_STATUS 0x70
#define R_DESC_LOW 0x80
#define R_DESC_HIGH 0x84
#define R_DRIVER_LOW 0x90
#define R_DRIVER_HIGH 0x94
#define R_DEVICE_LOW 0xa0
#define R_DEVICE_HIGH 0xa4

/* vnet_w: ecx = register offset, eax = value (32-bit write) */
vnet_w:
    push %rbx
    mov $VNET_BASE, %rbx
    add %rcx, %rbx
    movl %eax, (%rbx)
    pop %rbx
    ret

/* vnet_r: ecx = register offset -> eax */
vnet_r:
    push %rbx
    mov $VNET_BASE, %rbx
    add %rcx, %rbx
    movl (%rbx), %eax
    pop %rbx
    ret

/* vnet_clear_rings: zeroes both queues' rings (after a device reset the indexes
 * restart at 0) */
vnet_clear_rings:
    push %rdi
    push %rcx
    push %rax
    mov $TX_DESC, %rdi
    mov $0x7000, %ecx
    xor %eax, %eax
    call fill
    pop %rax
    pop %rcx
    pop %rdi
    ret

/* vnet_init: reset, ACKNOWLEDGE | DRIVER, VERSION_1, FEATURES_OK */
vnet_init:
    call vnet_clear_rings
    mov $R_STATUS, %ecx
    xor %eax, %eax
    call vnet_w
    mov $3, %eax
    call vnet_w
    mov $R_DRV_FEATURES_SEL, %ecx
    mov $1, %eax
    call vnet_w
    mov $R_DRV_FEATURES, %ecx
    mov $1, %eax
    call vnet_w
    mov $R_STATUS, %ecx
    mov $11, %eax
    call vnet_w
    ret

/* vnet_go: DRIVER_OK */
vnet_go:
    mov $R_STATUS, %ecx
    mov $15, %eax
    call vnet_w
    ret

/* vnet_queue: edi = queue, esi = descriptor table, edx = available ring, r8d = used
 * ring; 4 entries; asks for QUEUE_READY and prints " q=<ready read back>" */
vnet_queue:
    push %rbx
    mov $R_QUEUE_SEL, %ecx
    mov %edi, %eax
    call vnet_w
    mov $R_QUEUE_NUM, %ecx
    mov $4, %eax
    call vnet_w
    mov $R_DESC_LOW, %ecx
    mov %esi, %eax
    call vnet_w
    mov $R_DESC_HIGH, %ecx
    xor %eax, %eax
    call vnet_w
    mov $R_DRIVER_LOW, %ecx
    mov %edx, %eax
    call vnet_w
    mov $R_DRIVER_HIGH, %ecx
    xor %eax, %eax
    call vnet_w
    mov $R_DEVICE_LOW, %ecx
    mov %r8d, %eax
    call vnet_w
    mov $R_DEVICE_HIGH, %ecx
    xor %eax, %eax
    call vnet_w
    mov $R_QUEUE_READY, %ecx
    mov $1, %eax
    call vnet_w
    call vnet_r
    mov %eax, %ebx
    mov $'q', %al
    call print_field
    pop %rbx
    ret

/* vnet_tx_queue: transmit queue at the standard rings */
vnet_tx_queue:
    mov $1, %edi
    mov $TX_DESC, %esi
    mov $TX_AVAIL, %edx
    mov $TX_USED, %r8d
    jmp vnet_queue

/* vnet_send: rdi = buffer (12-byte virtio_net_hdr + frame), esi = its length. Waits
 * (bounded) until the device returned the chain, as a driver reusing its descriptors
 * must: before the handover tvp-vmm's I/O thread sends, after the notify's exit. */
vnet_send:
    push %rax
    push %rbx
    push %rcx
    movzwl TX_AVAIL + 2, %ebx
    mov %ebx, %ecx
    and $3, %ecx
    mov %rcx, %rax
    shl $4, %rax
    add $TX_DESC, %rax
    mov %rdi, (%rax)
    movl %esi, 8(%rax)
    movl $0, 12(%rax)
    movw %cx, TX_AVAIL + 4(,%rcx,2)
    inc %ebx
    movw %bx, TX_AVAIL + 2
    mov $R_QUEUE_NOTIFY, %ecx
    mov $1, %eax
    call vnet_w
    mov $5000000, %ecx
1:  movzwl TX_USED + 2, %eax
    cmp %bx, %ax
    je 2f
    pause
    dec %ecx
    jnz 1b
2:  pop %rcx
    pop %rbx
    pop %rax
    ret

/* vnet_status: prints " S=<device status>" */
vnet_status:
    push %rbx
    mov $R_STATUS, %ecx
    call vnet_r
    mov %eax, %ebx
    mov $'S', %al
    call print_field
    pop %rbx
    ret

/* vnet_rx_offer: rdi = buffer the device may write (2048 bytes, WRITE): receive
 * queue descriptor 0, offered once */
vnet_rx_offer:
    mov %rdi, RX_DESC
    movl $2048, RX_DESC + 8
    movw $2, RX_DESC + 12
    movw $0, RX_DESC + 14
    movw $0, RX_AVAIL + 4
    movw $1, RX_AVAIL + 2
    ret

/* vnet_rx_wait: polls (each register read moves waiting frames in) until the
 * receive used index moves or a bound passes; prints " u=<used idx>" */
vnet_rx_wait:
    push %rbx
    mov $2000000, %ebx
1:  mov $R_INT_STATUS, %ecx
    call vnet_r
    movzwl RX_USED + 2, %eax
    test %eax, %eax
    jnz 2f
    dec %ebx
    jnz 1b
2:  movzwl RX_USED + 2, %ebx
    mov $'u', %al
    call print_field
    pop %rbx
    ret

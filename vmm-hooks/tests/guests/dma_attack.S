/* Points the virtio-net device at memory it must never write: a used ring on the
 * read-only configuration page (at enable, and moved there while the queue is live),
 * receive buffers on the configuration page and on the firmware image (this guest's
 * own image stands for the firmware's stub). Prints checksums of both before and
 * after ("C p=<page> s=<image area>"), the QUEUE_READY read-backs, device status and
 * receive used indexes. The test sends frames into the TAP meanwhile. */
#include "lib.S"
#include "vnet.S"
main:
    call checksums

    /* 1. A used ring on the configuration page, at enable. */
    call vnet_init
    mov $1, %edi
    mov $TX_DESC, %esi
    mov $TX_AVAIL, %edx
    mov $CONFIG_PAGE, %r8d
    call vnet_queue
    call vnet_status
    mov $'\n', %al
    call putc

    /* 2. A good used ring, moved onto the configuration page once the queue is live;
     * then a frame is sent, whose completion would be written to the used ring. */
    call vnet_init
    call vnet_tx_queue
    call vnet_go
    mov $R_DEVICE_LOW, %ecx
    mov $CONFIG_PAGE + 0x100, %eax
    call vnet_w
    mov $frame, %rdi
    mov $(frame_end - frame), %esi
    call vnet_send
    call vnet_status
    mov $'\n', %al
    call putc

    /* 3. A receive buffer on the configuration page. */
    call vnet_init
    xor %edi, %edi
    mov $RX_DESC, %esi
    mov $RX_AVAIL, %edx
    mov $RX_USED, %r8d
    call vnet_queue
    call vnet_go
    mov $CONFIG_PAGE, %rdi
    call vnet_rx_offer
    call vnet_rx_wait
    mov $'\n', %al
    call putc

    /* 4. A receive buffer on the firmware image. */
    call vnet_init
    xor %edi, %edi
    mov $RX_DESC, %esi
    mov $RX_AVAIL, %edx
    mov $RX_USED, %r8d
    call vnet_queue
    call vnet_go
    mov $image_area, %rdi
    call vnet_rx_offer
    call vnet_rx_wait
    mov $'\n', %al
    call putc

    call checksums
    call puts_done
    jmp power_off

/* csum: rsi = address, ecx = dwords -> eax */
csum:
    xor %eax, %eax
1:  rol $5, %eax
    xor (%rsi), %eax
    add $4, %rsi
    dec %ecx
    jnz 1b
    ret

/* checksums: prints "C p=<configuration page> s=<image area>\n" */
checksums:
    push %rbx
    mov $'C', %al
    call putc
    mov $CONFIG_PAGE, %rsi
    mov $1024, %ecx
    call csum
    mov %eax, %ebx
    mov $'p', %al
    call print_field
    mov $image_area, %rsi
    mov $1024, %ecx
    call csum
    mov %eax, %ebx
    mov $'s', %al
    call print_field
    mov $'\n', %al
    call putc
    pop %rbx
    ret

/* Part of the image, never executed: what a receive buffer must not overwrite. */
    .balign 4096
image_area:
    .set i, 1
    .rept 1024
    .long (i * 0x9e3779b9) & 0xffffffff
    .set i, i + 1
    .endr

    .data
frame:
    .fill 12, 1, 0
    .byte 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06
    .byte 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 2
    .byte 0, 0, 0, 0, 0, 0, 10, 0, 0, 1
    .ascii "TVP-LEGIT-ARP-----"
frame_end:

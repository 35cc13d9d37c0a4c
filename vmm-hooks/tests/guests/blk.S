/* Drives the virtio-blk disk through blkdrv.S: prints " q=<QUEUE_READY read back>",
 * then per request "R<type> s=<status byte> u=<used length>" and the first 32 bytes of
 * the 512-byte buffer (filled with '.' before each request; '_' for zeros). Requests:
 * read sector 0, read sector 8, read sector 16, write sector 0, read sector 1000000
 * (past the end), GET_ID. */
#include "lib.S"
#include "blkdrv.S"

main:
    call blk_init
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


/* blk_req: edi = request type, esi = sector; prints as above. */
blk_req:
    push %rbx
    push %rdi
    mov $BUF, %rdi
    mov $512, %ecx
    mov $0x2e, %al               /* '.': what the device did not write */
    call fill
    pop %rdi
    mov $512, %edx
    cmp $8, %edi
    jne 1f
    mov $20, %edx
1:  call blk_submit
    mov %eax, %ebx
    mov $'R', %al
    call putc
    mov %edi, %eax
    add $'0', %al
    call putc
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

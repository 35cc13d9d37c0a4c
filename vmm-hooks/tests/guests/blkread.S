/* Reads the whole virtio-blk disk sequentially in 1 MiB requests (blkdrv.S), between
 * milestone 1 and milestone 2 (the test times them), then prints " n=<requests OK>
 * e=<requests failed> c=<sum of each request's first 8 bytes, low 32 bits>". */
#include "lib.S"
#include "blkdrv.S"
#define REQ_SECTORS 2048

main:
    call blk_init
    mov $0x100, %ecx             /* capacity in sectors (low 32 bits) */
    call blk_r
    mov %eax, %r12d
    xor %r13d, %r13d             /* next sector */
    xor %r14d, %r14d             /* requests OK */
    xor %r15d, %r15d             /* requests failed */
    xor %ebp, %ebp               /* checksum */
    mov $1, %al                  /* milestone 1: reading starts */
    mov $BOOT_TIMER_PORT, %dx
    out %al, %dx
1:  lea REQ_SECTORS(%r13), %eax
    cmp %r12d, %eax
    ja 3f
    xor %edi, %edi
    mov %r13, %rsi
    mov $(REQ_SECTORS * 512), %edx
    call blk_submit
    test %eax, %eax
    jnz 2f
    inc %r14d
    add BUF, %ebp
    add BUF + 4, %ebp
    add $REQ_SECTORS, %r13d
    jmp 1b
2:  inc %r15d
    add $REQ_SECTORS, %r13d
    jmp 1b
3:  mov $2, %al                  /* milestone 2: done */
    mov $BOOT_TIMER_PORT, %dx
    out %al, %dx
    mov %r14d, %ebx
    mov $'n', %al
    call print_field
    mov %r15d, %ebx
    mov $'e', %al
    call print_field
    mov %ebp, %ebx
    mov $'c', %al
    call print_field
    mov $'\n', %al
    call putc
    call puts_done
    jmp power_off

/* One virtio-blk request, printed (blk.S's format), after lib.S and blkdrv.S. */
/* blk_req: edi = request type, esi = sector; prints "R<type> s=<status byte> u=<used
 * length>" and the first 32 bytes of the 512-byte buffer ('.' where the device wrote
 * nothing, '_' for zeros). */
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

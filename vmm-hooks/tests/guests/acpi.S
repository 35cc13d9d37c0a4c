/* Finds the ACPI tables as an OS does: scans 0xE0000..0x100000 for the RSDP on a
 * 16-byte boundary, checks its checksum, walks XSDT -> MADT (checksums too) and counts
 * the enabled processor-local-APIC entries; prints "acpi l=<count>" and powers off
 * through the FADT's sleep control register (SLP_EN | SLP_TYP 5). */
#include "lib.S"
main:
    mov $0xe0000, %rsi
    movabs $0x2052545020445352, %rax    /* "RSD PTR " */
1:  cmp $0x100000, %rsi
    jae fail
    cmp %rax, (%rsi)
    je 2f
    add $16, %rsi
    jmp 1b
2:  mov %rsi, %rdi
    mov $20, %ecx
    call sum8
    test %al, %al
    jnz fail
    mov 24(%rsi), %rdi                  /* XSDT */
    cmpl $0x54445358, (%rdi)            /* "XSDT" */
    jne fail
    mov 4(%rdi), %ecx
    call sum8
    test %al, %al
    jnz fail
    sub $36, %ecx
    shr $3, %ecx
    lea 36(%rdi), %r8
3:  test %ecx, %ecx
    jz fail
    mov (%r8), %r9
    cmpl $0x43495041, (%r9)             /* "APIC" */
    je 4f
    add $8, %r8
    dec %ecx
    jmp 3b
4:  mov %r9, %rdi                       /* MADT */
    mov 4(%r9), %ecx
    call sum8
    test %al, %al
    jnz fail
    lea 44(%r9), %r10
    lea (%r9, %rcx), %r11
    xor %ebx, %ebx
5:  cmp %r11, %r10
    jae 7f
    cmpb $0, (%r10)
    jne 6f
    testb $1, 4(%r10)
    jz 6f
    inc %ebx
6:  movzbl 1(%r10), %eax
    test %eax, %eax
    jz fail
    add %rax, %r10
    jmp 5b
7:  mov $'a', %al
    call putc
    mov $'c', %al
    call putc
    mov $'p', %al
    call putc
    mov $'i', %al
    call putc
    mov $'l', %al
    call print_field
    mov $'\n', %al
    call putc
    mov $ACPI_SLEEP_PORT, %dx
    mov $ACPI_SLEEP_OFF, %al
    out %al, %dx
8:  cli
    hlt
    jmp 8b

fail:
    mov $'F', %al
    call putc
    mov $'\n', %al
    call putc
    cli
    hlt

/* sum8: al = byte sum of ecx bytes at rdi (rdi, rcx preserved) */
sum8:
    push %rdi
    push %rcx
    xor %eax, %eax
1:  test %ecx, %ecx
    jz 2f
    add (%rdi), %al
    inc %rdi
    dec %ecx
    jmp 1b
2:  pop %rcx
    pop %rdi
    ret

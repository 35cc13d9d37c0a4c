/* happy.S, after printing "IMG:" and the first 32 bytes of the workload image the
 * configuration page describes (flags bit 0 at +12; the 48-byte descriptor follows
 * the auth code, TLS name and CA certificate whose lengths are at +88, +90, +92), or
 * "IMG:none". */
#define PRE_MAIN print_image
#include "happy.S"

print_image:
    mov $'I', %al
    call putc
    mov $'M', %al
    call putc
    mov $'G', %al
    call putc
    mov $':', %al
    call putc
    testl $1, CONFIG_PAGE + 12
    jz 9f
    movzwl CONFIG_PAGE + 88, %ebx
    movzwl CONFIG_PAGE + 90, %ecx
    add %ecx, %ebx
    movzwl CONFIG_PAGE + 92, %ecx
    add %ecx, %ebx
    add $(CONFIG_PAGE + 96), %rbx  /* rbx = descriptor */
    mov (%rbx), %rsi               /* image address */
    mov 8(%rbx), %rcx              /* image length */
    cmp $32, %rcx
    jbe 1f
    mov $32, %ecx
1:  test %rcx, %rcx
    jz 2f
    mov (%rsi), %al
    call putc
    inc %rsi
    dec %rcx
    jmp 1b
2:  mov $'\n', %al
    call putc
    ret
9:  mov $'n', %al
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

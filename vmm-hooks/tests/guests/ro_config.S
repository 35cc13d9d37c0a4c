/* Tries to overwrite the read-only configuration page and prints what it reads back. */
#include "lib.S"
main:
    movl CONFIG_PAGE, %ebx          /* before */
    mov $'b', %al
    call print_field
    movl $0xdeadbeef, CONFIG_PAGE
    movq $0, CONFIG_PAGE + 16       /* try to clear the VIP */
    movl CONFIG_PAGE, %ebx          /* after */
    mov $'a', %al
    call print_field
    movl CONFIG_PAGE + 16, %ebx
    mov $'v', %al
    call print_field
    mov $'\n', %al
    call putc
    call puts_done
    jmp power_off

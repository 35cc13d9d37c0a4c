/* Every mailbox command on its happy path, in order, then one request after handover. */
#include "lib.S"
main:
#ifdef PRE_MAIN
    call PRE_MAIN                  /* a variant's own first step (image.S) */
#endif
    mov $CMD_GET_VERSION, %edi
    xor %esi, %esi
    call mbox_call

    mov $MBOX_REQ + 16, %rdi
    mov $32, %ecx
    mov $0xab, %al
    call fill
    mov $CMD_TUNNEL, %edi
    mov $32, %esi
    call mbox_call

    mov $MBOX_REQ + 16, %rdi
    mov $16, %ecx
    mov $0x11, %al
    call fill
    mov $CMD_QUOTE, %edi
    mov $16, %esi
    call mbox_call

    mov $MBOX_REQ + 16, %rdi
    mov $32, %ecx
    mov $0xcd, %al
    call fill
    mov $CMD_HANDOVER, %edi
    mov $32, %esi
    call mbox_call

    mov $CMD_GET_VERSION, %edi     /* after handover: closed */
    xor %esi, %esi
    call mbox_call

    mov $1, %al                    /* milestone 1 */
    mov $BOOT_TIMER_PORT, %dx
    out %al, %dx
    call puts_done
    jmp power_off

/* Every mailbox command on its happy path, in order, then one request after handover. */
#include "lib.S"
main:
#ifdef PRE_MAIN
    call PRE_MAIN                  /* a variant's own first step (image.S) */
#endif
    mov $CMD_GET_VERSION, %edi
    xor %esi, %esi
    call mbox_call

    call attest

    mov $CMD_GET_VERSION, %edi     /* after handover: closed */
    xor %esi, %esi
    call mbox_call

    mov $1, %al                    /* milestone 1 */
    mov $BOOT_TIMER_PORT, %dx
    out %al, %dx
    call puts_done
    jmp power_off

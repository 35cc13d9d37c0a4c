/* The happy attestation path (tunnel, quote, handover), then a "workload" that runs
 * until it is stopped: for tvpd's management tests (pause, resume, power-off, reboot,
 * delete of a running VM). It counts in a loop so a paused VM is visibly stopped. */
#include "lib.S"
main:
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

    call puts_done
    xor %rax, %rax
1:  inc %rax
    jmp 1b

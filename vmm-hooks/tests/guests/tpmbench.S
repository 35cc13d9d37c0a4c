/* The vTPM benchmark's guest (benches/vtpm.rs): TPM2_Startup, then ROUNDS commands of
 * TPM2_PCR_Read(sha256: PCR 16) through the CRB (each: the command written into the
 * buffer, START, the response header read), then "done" and power-off. tpmbench0.S is
 * the same with no rounds (the run's fixed cost). */
#include "lib.S"
#ifndef ROUNDS
#define ROUNDS 2000
#endif

main:
    mov $TPM_CRB, %r15d
    movl $1, 0x08(%r15)          /* LOC_CTRL: requestAccess */
    movl $1, 0x40(%r15)          /* CTRL_REQ: cmdReady */
    lea bstartup(%rip), %rsi
    mov $12, %ecx
    call bcmd
    mov $ROUNDS, %r12d
1:  test %r12d, %r12d
    jz 2f
    lea bpcr_read(%rip), %rsi
    mov $20, %ecx
    call bcmd
    dec %r12d
    jmp 1b
2:  call puts_done
    jmp power_off

/* bcmd: ecx bytes at rsi into the buffer (dwords, then bytes), START, read the
 * response code (ignored). */
bcmd:
    lea 0x80(%r15), %rdx
3:  cmp $4, %ecx
    jb 4f
    movl (%rsi), %eax
    movl %eax, (%rdx)
    add $4, %rsi
    add $4, %rdx
    sub $4, %ecx
    jmp 3b
4:  test %ecx, %ecx
    jz 5f
    movb (%rsi), %al
    movb %al, (%rdx)
    inc %rsi
    inc %rdx
    dec %ecx
    jmp 4b
5:  movl $1, 0x4c(%r15)          /* CTRL_START */
    movl 0x86(%r15), %eax        /* response code */
    ret

    .section .rodata
bstartup:
    .byte 0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0
bpcr_read:
    .byte 0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7e
    .byte 0, 0, 0, 1, 0x00, 0x0b, 3, 0, 0, 1

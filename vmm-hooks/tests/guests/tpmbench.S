/* The vTPM benchmark's guest (benches/vtpm.rs): TPM2_Startup, then ROUNDS commands of
 * TPM2_PCR_Read(sha256: PCR 16) through the CRB (each: the command written into the
 * buffer, START, the response header read), then "done" and power-off. tpmbench0.S is
 * the same with no rounds (the run's fixed cost). With QUOTE defined (tpmbenchq.S,
 * tpmbenchq0.S) it first re-creates tvp's AK (TPM2_CreatePrimary, endorsement
 * hierarchy) and each round is a TPM2_Quote of PCR 16 with it instead. */
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
#ifdef QUOTE
    lea bcreate_ak(%rip), %rsi
    mov $(bcreate_ak_end - bcreate_ak), %ecx
    call bcmd
    movl 0x8a(%r15), %r13d       /* the AK's handle, as the TPM wrote it */
#endif
    mov $ROUNDS, %r12d
1:  test %r12d, %r12d
    jz 2f
#ifdef QUOTE
    lea bquote(%rip), %rsi
    mov $(bquote_end - bquote), %ecx
    mov %r13d, %ebx
#else
    lea bpcr_read(%rip), %rsi
    mov $20, %ecx
#endif
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
5:
#ifdef QUOTE
    cmpl $0x58010000, 0x86(%r15) /* a Quote (code 0x158 at offset 6, LE view): its handle */
    jne 6f
    movl %ebx, 0x8a(%r15)
6:
#endif
    movl $1, 0x4c(%r15)          /* CTRL_START */
    movl 0x86(%r15), %eax        /* response code */
    ret

    .section .rodata
bstartup:
    .byte 0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0
bpcr_read:
    .byte 0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7e
    .byte 0, 0, 0, 1, 0x00, 0x0b, 3, 0, 0, 1
#ifdef QUOTE
bcreate_ak:                      /* TPM2_CreatePrimary(endorsement, tvp's AK template) */
    .byte 0x80, 0x02, 0, 0, 0, 65, 0, 0, 0x01, 0x31
    .byte 0x40, 0, 0, 0x0b
    .byte 0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0
    .byte 0, 4, 0, 0, 0, 0
    .byte 0, 24
    .byte 0x00, 0x23, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0, 0
    .byte 0x00, 0x10, 0x00, 0x18, 0x00, 0x0b, 0x00, 0x03, 0x00, 0x10, 0, 0, 0, 0
    .byte 0, 0, 0, 0, 0, 0
bcreate_ak_end:
bquote:                          /* TPM2_Quote(AK, 32-byte nonce, its scheme, sha256: PCR 16) */
    .byte 0x80, 0x02, 0, 0, 0, 73, 0, 0, 0x01, 0x58
    .byte 0, 0, 0, 0
    .byte 0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0
    .byte 0, 32
    .fill 32, 1, 0x5a
    .byte 0x00, 0x10
    .byte 0, 0, 0, 1, 0x00, 0x0b, 3, 0, 0, 1
bquote_end:
#endif

/* A VM that uses the TPM the host made for it (tests/tests/vm_vtpm.rs): before the
 * happy mailbox flow it starts its TPM, re-creates tvp's AK from its template
 * (a restricted ECDSA P-256 primary of the endorsement hierarchy, agent/src/vm/vtpm/
 * provision.rs), quotes PCR 16 with it over the nonce 0x5a x 32, and reads the first
 * 64 bytes of the EK certificate's NV index 0x01c0000a. Prints
 *   "T s=<Startup rc> c=<CreatePrimary rc> q=<Quote rc> n=<NV_Read rc>"
 *   "Q <Quote response, hex>"  and  "N <NV_Read response, hex>"
 * (in 4-byte groups, padded; its size field says how much is real). */
#define PRE_MAIN tpm_quote
#include "happy.S"
#include "tpmdrv.S"

    .text
tpm_quote:
    push %r12
    push %r13
    push %r15
    mov $TPM_CRB, %r15d
    movl $1, LOC_CTRL            /* requestAccess */
    movl $1, CTRL_REQ            /* cmdReady */
    mov $'T', %al
    call putc
    lea startup(%rip), %rsi
    mov $(startup_end - startup), %ecx
    mov $'s', %dil
    call tpm_cmd
    lea create_ak(%rip), %rsi
    mov $(create_ak_end - create_ak), %ecx
    mov $'c', %dil
    call tpm_cmd
    movl DATA_OFF + 10(%r15), %r12d   /* the AK's handle, as the TPM wrote it */
    /* The TPM may answer TPM_RC_RETRY (0x922) while it tests the algorithm on first
     * use; like a TSS, ask again (at most 8 times). */
    mov $8, %r13d
3:  lea quote(%rip), %rsi
    mov $(quote_end - quote), %ecx
    call tpm_copy
    movl %r12d, DATA_OFF + 10(%r15)
    movl $1, CTRL_START
    movl DATA_OFF + 6(%r15), %ebx
    bswap %ebx
    cmp $0x922, %ebx
    jne 4f
    dec %r13d
    jnz 3b
4:  mov $'q', %al
    call print_field
    mov $'Q', %dil
    call tpm_dump
    mov $'T', %al
    call putc
    lea nv_read(%rip), %rsi
    mov $(nv_read_end - nv_read), %ecx
    mov $'n', %dil
    call tpm_cmd
    mov $'N', %dil
    call tpm_dump
    mov $'\n', %al
    call putc
    pop %r15
    pop %r13
    pop %r12
    ret

/* tpm_dump: prints "\n<dil>" and the response (its size field's bytes, at most
 * 1024) as print_dwords' groups, then a newline. */
tpm_dump:
    mov $'\n', %al
    call putc
    mov %dil, %al
    call putc
    movl DATA_OFF + 2(%r15), %r13d
    bswap %r13d
    cmp $1024, %r13d
    jbe 1f
    mov $1024, %r13d
1:  add $3, %r13d
    shr $2, %r13d
    lea DATA_OFF(%r15), %r12
    call print_dwords
    mov $'\n', %al
    call putc
    ret

    .section .rodata
create_ak:                       /* TPM2_CreatePrimary(endorsement, tvp AK template) */
    .byte 0x80, 0x02, 0, 0, 0, 65, 0, 0, 0x01, 0x31
    .byte 0x40, 0, 0, 0x0b
    .byte 0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0
    .byte 0, 4, 0, 0, 0, 0                      /* inSensitive: empty */
    .byte 0, 24                                 /* inPublic: TPMT_PUBLIC */
    .byte 0x00, 0x23, 0x00, 0x0b                /* ECC, nameAlg SHA-256 */
    .byte 0x00, 0x05, 0x00, 0x72                /* fixedTPM fixedParent sDO userWithAuth restricted sign */
    .byte 0, 0                                  /* authPolicy: none */
    .byte 0x00, 0x10                            /* symmetric: NULL */
    .byte 0x00, 0x18, 0x00, 0x0b                /* ECDSA, SHA-256 */
    .byte 0x00, 0x03                            /* NIST P-256 */
    .byte 0x00, 0x10                            /* kdf: NULL */
    .byte 0, 0, 0, 0                            /* unique: empty point */
    .byte 0, 0                                  /* outsideInfo */
    .byte 0, 0, 0, 0                            /* creationPCR: none */
create_ak_end:
quote:                           /* TPM2_Quote(AK, nonce 0x5a x 32, key's scheme, sha256: PCR 16) */
    .byte 0x80, 0x02, 0, 0, 0, 73, 0, 0, 0x01, 0x58
    .byte 0, 0, 0, 0                            /* signHandle: patched in */
    .byte 0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0
    .byte 0, 32
    .fill 32, 1, 0x5a
    .byte 0x00, 0x10                            /* inScheme: NULL (the key's) */
    .byte 0, 0, 0, 1, 0x00, 0x0b, 3, 0, 0, 1
quote_end:
nv_read:                         /* TPM2_NV_Read(0x01c0000a, 64 bytes at 0), its own empty auth */
    .byte 0x80, 0x02, 0, 0, 0, 35, 0, 0, 0x01, 0x4e
    .byte 0x01, 0xc0, 0x00, 0x0a, 0x01, 0xc0, 0x00, 0x0a
    .byte 0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0
    .byte 0, 64, 0, 0
nv_read_end:

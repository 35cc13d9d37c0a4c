/* tpm_run: drives the VM's TPM through its CRB interface (tvp_vmm::tpm_crb) at
 * TPM_CRB: takes locality 0, then sends TPM2_Startup(CLEAR), TPM2_PCR_Extend(PCR 16,
 * SHA-256 digest 0x01..0x20), TPM2_PCR_Read(PCR 16, SHA-256) and a command whose size
 * field is 0xffffffff. Prints
 *   "T g=<LOC_STS> i=<INTF_ID low>"
 *   "T s=<Startup rc> x=<Extend rc> r=<Read rc>"
 *   "P <PCR 16 as 8 big-endian dwords>"
 *   "T b=<bad command rc>"
 * Include after lib.S (tpm.S alone, tpmvm.S after the happy mailbox flow's code). */

/* Offsets from %r15 = TPM_CRB (above 2 GiB: no absolute disp32 addressing). */
#define LOC_CTRL  0x08(%r15)
#define LOC_STS   0x0c(%r15)
#define INTF_ID   0x30(%r15)
#define CTRL_REQ  0x40(%r15)
#define CTRL_START 0x4c(%r15)
#define DATA_OFF  0x80

tpm_run:
    push %r12
    push %r13
    push %r15
    mov $TPM_CRB, %r15d
    movl $1, LOC_CTRL            /* requestAccess */
    movl $1, CTRL_REQ            /* cmdReady */
    mov $'T', %al
    call putc
    movl LOC_STS, %ebx
    mov $'g', %al
    call print_field
    movl INTF_ID, %ebx
    mov $'i', %al
    call print_field
    mov $'\n', %al
    call putc

    mov $'T', %al
    call putc
    lea startup(%rip), %rsi
    mov $(startup_end - startup), %ecx
    mov $'s', %dil
    call tpm_cmd
    lea extend(%rip), %rsi
    mov $(extend_end - extend), %ecx
    mov $'x', %dil
    call tpm_cmd
    lea pcr_read(%rip), %rsi
    mov $(pcr_read_end - pcr_read), %ecx
    mov $'r', %dil
    call tpm_cmd
    /* The PCR value: response bytes 30..62. */
    mov $'\n', %al
    call putc
    mov $'P', %al
    call putc
    lea DATA_OFF + 30(%r15), %r12
    mov $8, %r13d
    call print_dwords
    mov $'\n', %al
    call putc
    mov $'T', %al
    call putc
    lea bad(%rip), %rsi
    mov $(bad_end - bad), %ecx
    mov $'b', %dil
    call tpm_cmd
    mov $'\n', %al
    call putc
    pop %r15
    pop %r13
    pop %r12
    ret

/* tpm_cmd: copies ecx bytes at rsi into the CRB buffer (tpm_copy), starts it and
 * prints " <dil>=<response code>". */
tpm_cmd:
    call tpm_copy
    movl $1, CTRL_START
    movl DATA_OFF + 6(%r15), %ebx
    bswap %ebx
    mov %dil, %al
    call print_field
    ret

/* print_dwords: r13d (>= 1) 4-byte groups from r12 as " XXXXXXXX" each, in memory
 * order (clobbers r12, r13). */
print_dwords:
1:  mov $' ', %al
    call putc
    movl (%r12), %eax
    bswap %eax
    call print_hex32
    add $4, %r12
    dec %r13d
    jnz 1b
    ret

/* tpm_copy: ecx bytes at rsi into the CRB buffer, byte by byte. */
tpm_copy:
    lea DATA_OFF(%r15), %rdx
2:  movb (%rsi), %al
    movb %al, (%rdx)
    inc %rsi
    inc %rdx
    dec %ecx
    jnz 2b
    ret

    .section .rodata
startup:                         /* TPM2_Startup(TPM_SU_CLEAR) */
    .byte 0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0
startup_end:
extend:                          /* TPM2_PCR_Extend(16, password session, sha256) */
    .byte 0x80, 0x02, 0, 0, 0, 65, 0, 0, 0x01, 0x82
    .byte 0, 0, 0, 16
    .byte 0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0
    .byte 0, 0, 0, 1, 0x00, 0x0b
    .byte 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08
    .byte 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10
    .byte 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18
    .byte 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20
extend_end:
pcr_read:                        /* TPM2_PCR_Read(sha256: PCR 16) */
    .byte 0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7e
    .byte 0, 0, 0, 1, 0x00, 0x0b, 3, 0, 0, 1
pcr_read_end:
bad:                             /* size field 0xffffffff */
    .byte 0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x7e
bad_end:

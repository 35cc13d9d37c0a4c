/* A network-boot test workload for a VM with a TPM of its own (tests/tests/vm_vtpm.rs):
 * runs at CPL 0 after the firmware's handover (the VMM's identity map) and reports,
 * on COM1, what a tenant's tools would read after a measured boot:
 *   "R <hex>"  the response to TPM2_PCR_Read(SHA-256: PCRs 0, 1, 4)
 *   "C <hex>"  the response to TPM2_GetCapability(TPM_PT_STARTUP_CLEAR)
 *   "L <hex>"  the first 2 KiB of the event log area (0xa0000, the ACPI TPM2 LASA)
 *   "tvp-tpm-workload: done"
 * then powers off. The TPM is driven through its CRB interface at 0xfed40000
 * (locality 0, buffer at +0x80), as tvp-vmm serves it. Linked in the firmware's
 * workload window (0x2000000) by link.ld. */
    .code64
    .text
    .global _start
_start:
    mov $0xfed40000, %r15d
    movl $1, 0x08(%r15)          /* LOC_CTRL: requestAccess */
    movl $1, 0x40(%r15)          /* CTRL_REQ: cmdReady */

    lea pcr_read(%rip), %rsi
    mov $(pcr_read_end - pcr_read), %ecx
    call tpm_cmd
    mov $'R', %al
    lea 0x80(%r15), %rsi
    mov $130, %ecx
    call dump

    lea getcap(%rip), %rsi
    mov $(getcap_end - getcap), %ecx
    call tpm_cmd
    mov $'C', %al
    lea 0x80(%r15), %rsi
    mov $27, %ecx
    call dump

    mov $'L', %al
    mov $0xa0000, %esi
    mov $2048, %ecx
    call dump

    lea done(%rip), %rsi
    call puts
    mov $0x604, %dx
    mov $0x2000, %ax
    out %ax, %dx
1:  cli
    hlt
    jmp 1b

/* tpm_cmd: copies ecx bytes at rsi into the CRB buffer and starts the command (the
 * device completes it before the write retires). */
tpm_cmd:
    lea 0x80(%r15), %rdi
2:  movb (%rsi), %al
    movb %al, (%rdi)
    inc %rsi
    inc %rdi
    dec %ecx
    jnz 2b
    movl $1, 0x4c(%r15)          /* CTRL_START */
    ret

/* dump: prints "<al> " then ecx bytes at rsi as hex, then a newline. */
dump:
    call putc
    mov $' ', %al
    call putc
3:  movb (%rsi), %bl
    mov %bl, %al
    shr $4, %al
    call hexdigit
    mov %bl, %al
    and $0xf, %al
    call hexdigit
    inc %rsi
    dec %ecx
    jnz 3b
    mov $'\n', %al
    jmp putc

hexdigit:
    add $'0', %al
    cmp $'9', %al
    jbe putc
    add $('a' - '0' - 10), %al
    /* fall through */
putc:
    push %rdx
    mov $0x3f8, %dx
    out %al, %dx
    pop %rdx
    ret

puts:
4:  movb (%rsi), %al
    test %al, %al
    jz 5f
    call putc
    inc %rsi
    jmp 4b
5:  ret

    .section .rodata
pcr_read:                        /* TPM2_PCR_Read(sha256: PCRs 0, 1, 4) */
    .byte 0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7e
    .byte 0, 0, 0, 1, 0x00, 0x0b, 3, 0x13, 0, 0
pcr_read_end:
getcap:                          /* TPM2_GetCapability(TPM_PROPERTIES, STARTUP_CLEAR, 1) */
    .byte 0x80, 0x01, 0, 0, 0, 22, 0, 0, 0x01, 0x7a
    .byte 0, 0, 0, 6, 0, 0, 0x02, 0x01, 0, 0, 0, 1
getcap_end:
done:
    .asciz "tvp-tpm-workload: done\n"

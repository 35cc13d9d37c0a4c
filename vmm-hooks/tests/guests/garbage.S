/* Rings the doorbell GARBAGE_ROUNDS times with pseudo-random request blocks
 * (xorshift64), every other round with a valid magic and version. */
#include "lib.S"
#define GARBAGE_ROUNDS 2000
main:
    mov $0x9e3779b97f4a7c15, %r8      /* rng state */
    mov $GARBAGE_ROUNDS, %r9d
round:
    mov $MBOX_REQ, %rdi
    mov $8, %ecx                      /* 8 qwords = header + 48 payload bytes */
fillq:
    mov %r8, %rax                     /* xorshift64 */
    shl $13, %rax
    xor %rax, %r8
    mov %r8, %rax
    shr $7, %rax
    xor %rax, %r8
    mov %r8, %rax
    shl $17, %rax
    xor %rax, %r8
    mov %r8, (%rdi)
    add $8, %rdi
    dec %ecx
    jnz fillq
    test $1, %r9d
    jz 1f
    movl $REQ_MAGIC, MBOX_REQ
    movw $MBOX_VERSION, MBOX_REQ + 4
    andw $7, MBOX_REQ + 6             /* command 0..7 */
    andl $63, MBOX_REQ + 8            /* length 0..63 */
    movl $0, MBOX_REQ + 12            /* reserved word valid */
1:  mov $DOORBELL_PORT, %dx
    out %eax, %dx
    dec %r9d
    jnz round
    call puts_done
    jmp power_off

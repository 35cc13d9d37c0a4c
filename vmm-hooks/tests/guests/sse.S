/* Enables SSE and executes pxor at CPL 0. On the nested development machines KVM's
 * emulator cannot execute it (KVM_EXIT_INTERNAL_ERROR); on real hosts it runs and the
 * guest powers off. The test finds sse_insn with nm. */
#include "lib.S"
main:
    mov %cr0, %rax
    and $~4, %rax            /* clear EM */
    or $2, %rax              /* set MP */
    mov %rax, %cr0
    mov %cr4, %rax
    or $0x600, %rax          /* OSFXSR | OSXMMEXCPT */
    mov %rax, %cr4
    jmp sse_insn
sse_insn:
    pxor %xmm0, %xmm0
    call puts_done
    jmp power_off

//! Runtime support a freestanding image must provide itself: the C memory functions
//! the compiler emits calls to, and the unwinding symbols the precompiled `core`
//! references even with `panic = "abort"` (never called).
//!
//! The memory functions are assembly (`rep movsb`/`rep stosb`, fast at CPL 3) so the
//! optimizer can neither drop them under LTO nor turn their loops back into calls to
//! themselves.

use core::arch::global_asm;

global_asm!(
    r#"
    .text
    .global memcpy
    .global memmove
    .global memset
    .global memcmp
    .global bcmp
    .global _Unwind_Resume
    .global rust_eh_personality

/* void *memcpy(void *dst, const void *src, size_t n) */
memcpy:
    mov %rdi, %rax
    mov %rdx, %rcx
    rep movsb
    ret

/* void *memmove(void *dst, const void *src, size_t n): backwards if dst overlaps
   the source from above. */
memmove:
    mov %rdi, %rax
    cmp %rsi, %rdi
    jbe 1f
    lea (%rsi,%rdx), %r8
    cmp %r8, %rdi
    jae 1f
    lea -1(%rsi,%rdx), %rsi
    lea -1(%rdi,%rdx), %rdi
    mov %rdx, %rcx
    std
    rep movsb
    cld
    ret
1:
    mov %rdx, %rcx
    rep movsb
    ret

/* void *memset(void *dst, int c, size_t n) */
memset:
    mov %rdi, %r9
    mov %esi, %eax
    mov %rdx, %rcx
    rep stosb
    mov %r9, %rax
    ret

/* int memcmp(const void *a, const void *b, size_t n); bcmp is the same. */
memcmp:
bcmp:
    xor %eax, %eax
    test %rdx, %rdx
    jz 3f
2:
    movzbl (%rdi), %eax
    movzbl (%rsi), %ecx
    sub %ecx, %eax
    jnz 3f
    inc %rdi
    inc %rsi
    dec %rdx
    jnz 2b
3:
    ret

/* The libc calls the `getrandom` crate makes (for ring): syscall(SYS_getrandom = 318,
   buf, len, flags) goes to tvp_getrandom; everything else, and the /dev/urandom
   fallback (open, read, poll), fails with ENOSYS. */
    .global syscall
    .global open
    .global open64
    .global read
    .global poll
    .global __errno_location
    .global close
    .global pthread_mutex_lock
    .global pthread_mutex_unlock
/* Single-threaded: the mutexes of getrandom's (unused) file fallback always succeed. */
close:
pthread_mutex_lock:
pthread_mutex_unlock:
    xor %eax, %eax
    ret
syscall:
    cmp $318, %rdi
    jne 4f
    mov %rsi, %rdi
    mov %rdx, %rsi
    jmp tvp_getrandom
open:
open64:
read:
poll:
4:
    movl $38, tvp_errno(%rip)
    mov $-1, %rax
    ret
__errno_location:
    lea tvp_errno(%rip), %rax
    ret

/* Never reached: panic = "abort" means nothing unwinds. */
_Unwind_Resume:
rust_eh_personality:
    ud2

    .bss
    .balign 4
tvp_errno:
    .long 0
"#,
    options(att_syntax)
);

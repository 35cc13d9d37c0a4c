/* Attests and hands over like happy.S, then runs on for good: a running VM (for the
   tvpd restart and adoption tests). */
#include "lib.S"
main:
#ifdef PRE_MAIN
    call PRE_MAIN                  /* a variant's own first step (tpmstay.S) */
#endif
    call attest
    mov $1, %al                    /* milestone 1 */
    mov $BOOT_TIMER_PORT, %dx
    out %al, %dx
    call puts_done
1:  pause
    jmp 1b

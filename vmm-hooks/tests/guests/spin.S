/* Announces itself, then spins forever (for stop, signal and channel-loss tests). */
#include "lib.S"
main:
    call puts_done
1:  jmp 1b

/* The happy attestation path (tunnel, quote, handover), then a "workload" that runs
 * until it is stopped: for tvpd's management tests (pause, resume, power-off, reboot,
 * delete of a running VM). It counts in a loop so a paused VM is visibly stopped. */
#include "lib.S"
main:
    call attest
    call puts_done
    xor %rax, %rax
1:  inc %rax
    jmp 1b

/* The VM's TPM alone (tvp-vmm standalone, tests/vtpm.rs): tpmdrv.S's checks, then
 * "done" and power-off. */
#include "lib.S"

main:
    call tpm_run
    call puts_done
    jmp power_off

#include "tpmdrv.S"

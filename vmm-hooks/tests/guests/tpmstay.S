/* A VM with a TPM that stays (tests/tests/vm_vtpm.rs): tpmdrv.S's checks of the VM's
 * TPM, then attests and hands over like stay.S and runs on, so its TPM can outlive a
 * reboot. */
#include "lib.S"
main:
    call tpm_run
    call attest
    mov $1, %al                    /* milestone 1 */
    mov $BOOT_TIMER_PORT, %dx
    out %al, %dx
    call puts_done
1:  pause
    jmp 1b

#include "tpmdrv.S"

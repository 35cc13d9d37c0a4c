/* A VM with a TPM that stays (tests/tests/vm_vtpm.rs): tpmdrv.S's checks of the VM's
 * TPM, then stay.S: attests, hands over and runs on, so its TPM can outlive a reboot. */
#define PRE_MAIN tpm_run
#include "stay.S"
#include "tpmdrv.S"

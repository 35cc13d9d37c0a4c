/* A measured VM with a TPM under tvpd (tests/tests/vm_vtpm.rs): tpmdrv.S's checks of
 * the VM's TPM first, then happy.S's mailbox flow (attestation, handover), "done" and
 * power-off, so the VM ends powered-off while running. */
#define PRE_MAIN tpm_run
#include "happy.S"
#include "tpmdrv.S"

/* The attestation happy path up to the handover, then a reboot through the FADT's
 * reset register: tvpd must end the VM (reboot-requested), never run it again. */
#include "lib.S"
main:
    call attest
    mov $ACPI_SLEEP_PORT, %dx
    mov $ACPI_RESET, %al
    out %al, %dx
1:  cli
    hlt
    jmp 1b

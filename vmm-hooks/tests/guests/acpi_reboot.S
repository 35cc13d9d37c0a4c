/* Reboots through the FADT's reset register (ACPI_RESET to the sleep control port). */
#include "lib.S"
main:
    mov $ACPI_SLEEP_PORT, %dx
    mov $ACPI_RESET, %al
    out %al, %dx
1:  cli
    hlt
    jmp 1b

/* Writes FLOOD_BYTES characters to the UART (a guest trying to fill the host's disk). */
#include "lib.S"
#define FLOOD_BYTES 20000
main:
    mov $FLOOD_BYTES, %ecx
    mov $SERIAL_PORT, %dx
    mov $'A', %al
1:  out %al, %dx
    dec %ecx
    jnz 1b
    jmp power_off

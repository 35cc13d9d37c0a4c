/* Asks for a reset through the i8042 controller. */
#include "lib.S"
main:
    mov $I8042_CMD_RESET, %al
    out %al, $I8042_PORT
1:  jmp 1b

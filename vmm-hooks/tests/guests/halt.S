/* Halts with interrupts off and no interrupt source: can never wake. */
#include "lib.S"
main:
    cli
    hlt

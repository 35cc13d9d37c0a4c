/* No IDT: #UD -> #GP -> #DF -> triple fault (KVM_EXIT_SHUTDOWN). */
#include "lib.S"
main:
    ud2

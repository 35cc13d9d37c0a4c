/* smp.S with the roles turned: the BSP starts the AP and spins; the AP prints, then
 * powers the VM off. Any vCPU's end ends the VM. */
#define AP_POWER_OFF
#include "smp.S"

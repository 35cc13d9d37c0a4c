/* spoof.S after the handover: the workload phase's rules. */
#define HANDOVER
#include "spoof.S"

/* benches/vtpm.rs's baseline: tpmbench.S with no rounds (start, Startup, power-off). */
#define ROUNDS 0
#include "tpmbench.S"

/* benches/vtpm.rs's quote baseline: tpmbenchq.S with no rounds (Startup, the AK). */
#define QUOTE
#define ROUNDS 0
#include "tpmbench.S"

/* benches/vtpm.rs: TPM2_Quote rounds with tvp's AK (tpmbench.S with QUOTE). */
#define QUOTE
#define ROUNDS 200
#include "tpmbench.S"

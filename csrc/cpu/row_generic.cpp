// The row pass in the portable baseline build (the compiler's default instruction set; SSE2 on
// x86-64). Used when the CPU has no AVX2/FMA, or with SATKERN_CPU_NO_AVX2=1.
#define SATKERN_ROW_NS generic
#include "cpu/row_vec.inc.h"

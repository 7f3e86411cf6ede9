// The row pass built for AVX2 + FMA (setup.py compiles *_avx2.cpp files with -mavx2 -mfma and
// CPU_CAPABILITY=AVX2, so at::vec uses 256-bit vectors). attention_cpu.cpp calls into it only when
// cpu_has_avx2() (a portable unit) says the CPU runs it. On other architectures this file builds the
// generic code under the avx2 name (never chosen: avx2_rows_built() is false there).
#define SATKERN_ROW_NS avx2
#include "cpu/row_vec.inc.h"

// The AVX-512 float32 row pass (row_avx512.cpp), called by attention_cpu.cpp when the CPU has it.
#pragma once

#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SATKERN_HAVE_AVX512_ROW 1
#else
#define SATKERN_HAVE_AVX512_ROW 0
#endif

namespace satkern {
namespace avx512 {

struct RowResult {
  float lse, entropy, distance, maxweight, factor;
};

#if SATKERN_HAVE_AVX512_ROW
// Same contract as softmax_row<float, ent, dist> in attention_cpu.cpp.
RowResult softmax_row(bool ent, bool dist, float* s, int64_t w, int64_t a, int64_t e, int64_t kw0,
                      int64_t qi, const float* brow, int64_t bsj, float* col);
#endif

}  // namespace avx512
}  // namespace satkern

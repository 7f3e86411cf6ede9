// CPU-feature checks, compiled with the portable flags (they run before any wider code may).
#include "cpu/row_kernels.h"

namespace satkern {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
bool cpu_has_avx2() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
}
bool cpu_has_avx512() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  }();
  return ok;
}
#ifdef SATKERN_AVX2_UNIT
bool avx2_rows_built() { return true; }  // setup.py compiled row_avx2.cpp with -mavx2 -mfma
#else
bool avx2_rows_built() { return false; }
#endif
#else
bool cpu_has_avx2() { return false; }
bool cpu_has_avx512() { return false; }
bool avx2_rows_built() { return false; }
#endif

}  // namespace satkern

// The row pass builds of the CPU kernel and the CPU-feature checks that choose among them.
//
// setup.py compiles every csrc/cpu/*.cpp with portable flags, except files named *_avx2.cpp
// (-mavx2 -mfma) and *_avx512.cpp (-mavx512f -mavx512dq -mavx2 -mfma), each compiled as its own
// object. Code of those files may only run after the matching check below said yes, and the
// checks themselves live in a portable unit (cpu_features.cpp): nothing compiled with wider
// instructions runs on a CPU that lacks them.
#pragma once

#include <cstdint>

namespace satkern {

template <typename T>
struct RowStats {
  T lse, entropy, distance, maxweight;
  T factor;  // A = factor * s after the row pass (1/l; 0 for an empty row; 1 for a NaN row)
};

// One query row of scores -> its softmax and statistics (contract: row_vec.inc.h). The last
// argument, when not null, receives the row's column-mass contribution: col[j] += A[j] over the
// admissible keys (window coordinates), added while the row is still in L1.
template <typename T>
using RowFn = RowStats<T> (*)(T*, int64_t, int64_t, int64_t, int64_t, int64_t, const T*, int64_t, T*);

namespace generic {  // row_generic.cpp: the portable baseline
template <typename T>
RowFn<T> row_fn(bool ent, bool dist);
}
namespace avx2 {  // row_avx2.cpp (x86-64 only; elsewhere the generic build stands in)
template <typename T>
RowFn<T> row_fn(bool ent, bool dist);
}

// cpu_features.cpp (portable): what this CPU can run, and whether the AVX2 build exists.
bool cpu_has_avx2();    // AVX2 and FMA
bool cpu_has_avx512();  // AVX-512F and DQ
bool avx2_rows_built();

}  // namespace satkern

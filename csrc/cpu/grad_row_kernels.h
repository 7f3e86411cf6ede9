// The row pass of the CPU backward (attention_cpu_backward.cpp) and its instruction-set builds.
//
// grad_row.inc.h is compiled once per instruction set, like the forward's row pass
// (row_kernels.h): grad_row_generic.cpp with the portable flags, grad_row_avx2.cpp with -mavx2
// -mfma (setup.py compiles *_avx2.cpp files as their own objects). The backward picks a build at
// run time: AVX2 when avx2_rows_built() && cpu_has_avx2() (cpu_features.cpp, a portable unit) and
// SATKERN_CPU_NO_AVX2 is not 1, else the portable one. Both compute the same formulas.
#pragma once

#include <cstdint>

namespace satkern {

// The per-row constants of dS_ij = P_ij (dP_ij + c + g_col_j - g_ent t_ij + g_dist |i - j|), t = s - lse.
template <typename T>
struct RowGrad {
  T lse;     // the row's log-sum-exp (finite)
  T c;       // -Delta + g_lse - g_ent H - g_dist dist - r
  T g_ent;   // entropy gradient of the row
  T g_dist;  // distance gradient of the row
};

// One row over window coordinates [a, e) (key index kw0 + j): on entry s[j] = scale q.k (+ bias
// added here, through brow / bsj), dp[j] = dP (0 off the band in zero-span mode, or unused without
// an out gradient); gcol = g_col + kw0 (unused without a colmass gradient). On return s[j] = P_ij
// and dp[j] = dS_ij on [a, e); outside [a, e) nothing is touched.
template <typename T>
using GradRowFn = void (*)(T* s, T* dp, int64_t a, int64_t e, int64_t kw0, int64_t qi, const T* brow,
                           int64_t bsj, const T* gcol, const RowGrad<T>& g);

// r_i = sum_j exp(s_j - lse) g_col_j over [a, e), with s already holding scores + bias.
template <typename T>
using ColRowsumFn = T (*)(const T* s, int64_t a, int64_t e, T lse, const T* gcol);

namespace grad_generic {  // grad_row_generic.cpp: the portable baseline
template <typename T>
GradRowFn<T> grad_row_fn(bool out, bool ent, bool dist, bool col);
template <typename T>
ColRowsumFn<T> colmass_rowsum_fn();
}  // namespace grad_generic
namespace grad_avx2 {  // grad_row_avx2.cpp (x86-64 only; elsewhere the generic code under this name)
template <typename T>
GradRowFn<T> grad_row_fn(bool out, bool ent, bool dist, bool col);
template <typename T>
ColRowsumFn<T> colmass_rowsum_fn();
}  // namespace grad_avx2

}  // namespace satkern

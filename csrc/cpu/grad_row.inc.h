// The row pass of the CPU backward (contract: grad_row_kernels.h), written once with at::vec and
// compiled once per instruction set: grad_row_generic.cpp (portable flags) and grad_row_avx2.cpp
// (-mavx2 -mfma, CPU_CAPABILITY=AVX2). Each includes this file with its own SATKERN_GRAD_NS, and
// ATen puts Vectorized in an inline namespace named after CPU_CAPABILITY, so no two builds share a
// symbol (tests/test_build_isa.py checks the objects).
#ifndef SATKERN_GRAD_NS
#error "define SATKERN_GRAD_NS before including grad_row.inc.h"
#endif
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>

#include "cpu/grad_row_kernels.h"

namespace satkern {
namespace SATKERN_GRAD_NS {
namespace {

using at::vec::Vectorized;

#include "cpu/vec_math.inc.h"

template <typename T, bool OUT, bool ENT, bool DIST, bool COL>
void grad_row(T* s, T* dp, int64_t a, int64_t e, int64_t kw0, int64_t qi, const T* brow, int64_t bsj,
              const T* gcol, const RowGrad<T>& g) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  if (brow != nullptr) {
    int64_t j = a;
    if (bsj == 1)
      for (; j + V <= e; j += V) (Vec::loadu(s + j) + Vec::loadu(brow + j)).store(s + j);
    for (; j < e; ++j) s[j] += brow[j * bsj];
  }
  const Vec vlse(g.lse), vc(g.c), vge(g.g_ent), vgd(g.g_dist);
  // s - lse is -inf where a bias is -inf: P is 0 there; the clamp keeps P * t = 0 (not NaN)
  const Vec vlow(T(-1e30));
  const Vec vq(static_cast<T>(qi));
  const Vec vstep(static_cast<T>(V));
  Vec vk = Vec::arange(static_cast<T>(kw0 + a), T(1));
  int64_t j = a;
  for (; j + V <= e; j += V) {
    const Vec t = Vec::loadu(s + j) - vlse;
    const Vec p = vexp(t);
    Vec f = vc;
    if (OUT) f = f + Vec::loadu(dp + j);
    if (COL) f = f + Vec::loadu(gcol + j);
    if (ENT) f = f - vge * at::vec::maximum(t, vlow);
    if (DIST) {
      f = at::vec::fmadd(vgd, (vk - vq).abs(), f);
      vk = vk + vstep;
    }
    p.store(s + j);
    (p * f).store(dp + j);
  }
  for (; j < e; ++j) {
    const T t = s[j] - g.lse;
    const T p = std::exp(t);
    T f = g.c;
    if (OUT) f += dp[j];
    if (COL) f += gcol[j];
    if (ENT) f -= g.g_ent * std::max(t, T(-1e30));
    if (DIST) f += g.g_dist * std::abs(static_cast<T>(qi - (kw0 + j)));
    s[j] = p;
    dp[j] = p * f;
  }
}

template <typename T>
T colmass_rowsum(const T* s, int64_t a, int64_t e, T lse, const T* gcol) {
  using Vec = Vectorized<T>;
  const Vec vlse(lse);
  Vec acc(T(0));
  int64_t j = a;
  for (; j + Vec::size() <= e; j += Vec::size())
    acc = at::vec::fmadd(vexp(Vec::loadu(s + j) - vlse), Vec::loadu(gcol + j), acc);
  T r = hsum(acc);
  for (; j < e; ++j) r += std::exp(s[j] - lse) * gcol[j];
  return r;
}

template <typename T, bool OUT, bool ENT>
GradRowFn<T> pick3(bool dist, bool col) {
  if (dist && col) return &grad_row<T, OUT, ENT, true, true>;
  if (dist) return &grad_row<T, OUT, ENT, true, false>;
  if (col) return &grad_row<T, OUT, ENT, false, true>;
  return &grad_row<T, OUT, ENT, false, false>;
}

}  // namespace

template <typename T>
GradRowFn<T> grad_row_fn(bool out, bool ent, bool dist, bool col) {
  if (out && ent) return pick3<T, true, true>(dist, col);
  if (out) return pick3<T, true, false>(dist, col);
  if (ent) return pick3<T, false, true>(dist, col);
  return pick3<T, false, false>(dist, col);
}

template <typename T>
ColRowsumFn<T> colmass_rowsum_fn() {
  return &colmass_rowsum<T>;
}

// the instantiations the dispatch in attention_cpu_backward.cpp links against, once per build
template GradRowFn<float> grad_row_fn<float>(bool, bool, bool, bool);
template GradRowFn<double> grad_row_fn<double>(bool, bool, bool, bool);
template ColRowsumFn<float> colmass_rowsum_fn<float>();
template ColRowsumFn<double> colmass_rowsum_fn<double>();

}  // namespace SATKERN_GRAD_NS
}  // namespace satkern

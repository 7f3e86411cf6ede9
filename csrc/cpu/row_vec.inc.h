// The row pass of the CPU kernel (softmax of one row of scores plus its statistics), written once
// with at::vec and compiled once per instruction set: row_generic.cpp (the portable baseline,
// setup.py's base flags) and row_avx2.cpp (-mavx2 -mfma, CPU_CAPABILITY=AVX2). Each includes this
// file inside its own namespace (SATKERN_ROW_NS), and ATen puts Vectorized in an inline namespace
// named after CPU_CAPABILITY, so the two builds never share a symbol. attention_cpu.cpp picks one
// at run time (row_kernels.h).
#ifndef SATKERN_ROW_NS
#error "define SATKERN_ROW_NS before including row_vec.inc.h"
#endif
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/row_kernels.h"

namespace satkern {
namespace SATKERN_ROW_NS {
namespace {

using at::vec::Vectorized;

// ---------------------------------------------------------------------------------------------
// Vector helpers.
#include "cpu/vec_math.inc.h"

template <typename T>
inline T nan_max(T a, T b) {
  return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : (a > b ? a : b);
}

template <typename T>
inline T hmax(const Vectorized<T>& v) {
  alignas(64) T buf[Vectorized<T>::size()];
  v.store(buf);
  T m = -std::numeric_limits<T>::infinity();
  for (int i = 0; i < Vectorized<T>::size(); ++i) m = nan_max(m, buf[i]);
  return m;
}

// One query row of a block. `s` holds the row's scaled scores over the key window
// [kw0, kw0 + w); only [a, e) (window coordinates) is admissible. On return s[0, w) holds the
// unnormalized row p = exp(s - max) (0 outside [a, e)); the row of A is factor * p. The
// normalization is applied after the block's products (label_mass, out), which saves a
// pass over the scores. `brow` points at bias(b, h, qi, kw0) with key stride `bsj` (null: none).
// `col` (null: no column mass) gets col[j] += factor * p[j] for j in [a, e): the row's share of
// the column mass, added here while the row is in L1 instead of in a pass over the whole block.
template <typename T, bool ENT, bool DIST>
RowStats<T> softmax_row(T* s, int64_t w, int64_t a, int64_t e, int64_t kw0, int64_t qi,
                        const T* brow, int64_t bsj, T* col) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  constexpr T inf = std::numeric_limits<T>::infinity();
  constexpr T nan = std::numeric_limits<T>::quiet_NaN();

  // pass 1: bias and max (NaN-propagating)
  T m = -inf;
  {
    Vec vmax(-inf);
    int64_t j = a;
    if (brow != nullptr) {
      if (bsj == 1) {
        for (; j + V <= e; j += V) {
          Vec x = Vec::loadu(s + j) + Vec::loadu(brow + j);
          x.store(s + j);
          vmax = at::vec::maximum(vmax, x);
        }
      }
      for (; j < e; ++j) {
        s[j] += brow[j * bsj];
        m = nan_max(m, s[j]);
      }
    } else {
      for (; j + V <= e; j += V) vmax = at::vec::maximum(vmax, Vec::loadu(s + j));
      for (; j < e; ++j) m = nan_max(m, s[j]);
    }
    m = nan_max(m, hmax(vmax));
  }

  std::fill(s, s + a, T(0));
  std::fill(s + e, s + w, T(0));
  if (m == -inf) {  // empty distribution
    std::fill(s + a, s + e, T(0));
    return {-inf, T(0), T(0), T(0), T(0)};
  }
  if (m != m || m == inf) {  // NaN (or +inf) score: the whole row is NaN, as in the reference
    std::fill(s + a, s + e, nan);
    if (col != nullptr) std::fill(col + a, col + e, nan);
    return {nan, nan, nan, nan, T(1)};
  }

  // pass 2: p = exp(s - m), l = sum p, sum p (s - m), sum p |q - k|
  T l = 0, spt = 0, spd = 0;
  {
    const Vec vm(m);
    // s - m is -inf where a bias is -inf; p is 0 there, and clamping keeps p * t = 0 (not NaN).
    const Vec vlow(T(-1e30));
    const Vec vq(static_cast<T>(qi));
    const Vec vstep(static_cast<T>(V));
    Vec vk = Vec::arange(static_cast<T>(kw0 + a), T(1));
    // two independent accumulators per sum: shorter dependency chains and half the rounding
    // error growth of one running sum
    Vec vl(T(0)), vent(T(0)), vdist(T(0)), vl2(T(0)), vent2(T(0)), vdist2(T(0));
    int64_t j = a;
    for (; j + 2 * V <= e; j += 2 * V) {
      Vec t = Vec::loadu(s + j) - vm;
      Vec t2 = Vec::loadu(s + j + V) - vm;
      Vec p = vexp(t);
      Vec p2 = vexp(t2);
      p.store(s + j);
      p2.store(s + j + V);
      vl = vl + p;
      vl2 = vl2 + p2;
      if (ENT) {
        vent = at::vec::fmadd(p, at::vec::maximum(t, vlow), vent);
        vent2 = at::vec::fmadd(p2, at::vec::maximum(t2, vlow), vent2);
      }
      if (DIST) {
        vdist = at::vec::fmadd(p, (vk - vq).abs(), vdist);
        vk = vk + vstep;
        vdist2 = at::vec::fmadd(p2, (vk - vq).abs(), vdist2);
        vk = vk + vstep;
      }
    }
    for (; j + V <= e; j += V) {
      Vec t = Vec::loadu(s + j) - vm;
      Vec p = vexp(t);
      p.store(s + j);
      vl = vl + p;
      if (ENT) vent = at::vec::fmadd(p, at::vec::maximum(t, vlow), vent);
      if (DIST) {
        vdist = at::vec::fmadd(p, (vk - vq).abs(), vdist);
        vk = vk + vstep;
      }
    }
    l = hsum(vl + vl2);
    if (ENT) spt = hsum(vent + vent2);
    if (DIST) spd = hsum(vdist + vdist2);
    for (; j < e; ++j) {
      T t = s[j] - m;
      T p = std::exp(t);
      s[j] = p;
      l += p;
      if (ENT) spt += p * std::max(t, T(-1e30));
      if (DIST) spd += p * std::abs(static_cast<T>(qi - (kw0 + j)));
    }
  }

  const T inv = T(1) / l;
  const T logl = std::log(l);
  if (col != nullptr) {  // col[a, e) += inv * p
    const Vec vinv(inv);
    int64_t j = a;
    for (; j + V <= e; j += V) at::vec::fmadd(Vec::loadu(s + j), vinv, Vec::loadu(col + j)).store(col + j);
    for (; j < e; ++j) col[j] += inv * s[j];
  }
  return {m + logl, logl - spt * inv, spd * inv, inv, inv};
}

}  // namespace

template <typename T>
RowFn<T> row_fn(bool ent, bool dist) {
  if (ent && dist) return &softmax_row<T, true, true>;
  if (ent) return &softmax_row<T, true, false>;
  if (dist) return &softmax_row<T, false, true>;
  return &softmax_row<T, false, false>;
}

// the instantiations the dispatch in attention_cpu.cpp links against, once per build
template RowFn<float> row_fn<float>(bool, bool);
template RowFn<double> row_fn<double>(bool, bool);

}  // namespace SATKERN_ROW_NS
}  // namespace satkern

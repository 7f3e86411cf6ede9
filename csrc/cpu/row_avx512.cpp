// AVX-512 version of the float32 row pass of attention_cpu.cpp (softmax_row<float, ...>).
//
// setup.py compiles *_avx512.cpp files as their own objects with AVX-512 flags; ATen's own CPU
// kernels dispatch to AVX-512 at run time, so on AVX-512 machines the row pass (max, exp, sums)
// would otherwise run at half the vector width of torch's SDPA. The CPU check (cpu_has_avx512)
// lives in the portable cpu_features.cpp. The functions here carry a
// function-level target attribute and use only <immintrin.h> intrinsics (no ATen or std inline
// functions are compiled for AVX-512 here, so no AVX-512 code can leak into shared inline
// definitions); attention_cpu.cpp calls them only when the CPU reports AVX-512F/DQ.
// The exp is the same polynomial as ATen's Vectorized<float>::exp_u20 (max 20 ulp).
#include "row_avx512.h"

#if SATKERN_HAVE_AVX512_ROW
#include <immintrin.h>

#include <cmath>
#include <limits>

namespace satkern {
namespace avx512 {

#define SATKERN_AVX512 __attribute__((target("avx512f,avx512dq,fma,avx2")))

namespace {

SATKERN_AVX512 inline __m512 exp_u20(__m512 x) {
  const __m512 c1 = _mm512_set1_ps(0.999999701f);   // ~1/1!
  const __m512 c2 = _mm512_set1_ps(0.499991506f);   // ~1/2!
  const __m512 c3 = _mm512_set1_ps(0.166676521f);   // ~1/3!
  const __m512 c4 = _mm512_set1_ps(0.0418978221f);  // ~1/4!
  const __m512 c5 = _mm512_set1_ps(0.00828929059f); // ~1/5!
  const __m512 log2e = _mm512_set1_ps(1.44269502f);       // 1/ln 2
  const __m512 ln2 = _mm512_set1_ps(0.693147182f);        // ln 2
  const __m512 ln_flt_min = _mm512_set1_ps(-87.3365479f); // ln(FLT_MIN)
  const __m512 ln_flt_max = _mm512_set1_ps(88.7228394f);  // ln(FLT_MAX)
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512 one = _mm512_set1_ps(1.f);
  const __m512 two = _mm512_set1_ps(2.f);
  const __mmask16 too_small = _mm512_cmp_ps_mask(x, ln_flt_min, _CMP_LT_OS);
  __m512 src = _mm512_min_ps(x, ln_flt_max);
  src = _mm512_max_ps(src, ln_flt_min);
  // fx = floor(x / ln2 + 0.5); r = x - fx ln2; exp(x) = 2^fx exp(r)
  __m512 fx = _mm512_roundscale_ps(_mm512_fmadd_ps(src, log2e, half), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(fx, ln2, src);
  __m512 poly = _mm512_fmadd_ps(r, c5, c4);
  poly = _mm512_fmadd_ps(r, poly, c3);
  poly = _mm512_fmadd_ps(r, poly, c2);
  poly = _mm512_fmadd_ps(r, poly, c1);
  poly = _mm512_fmadd_ps(r, poly, one);
  // 2^(fx - 1) built in the exponent field (the -1 keeps fx = 128 representable), times 2
  __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_sub_ps(fx, one)), _mm512_set1_epi32(127));
  __m512 pow2 = _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  pow2 = _mm512_mask_blend_ps(too_small, pow2, _mm512_setzero_ps());
  return _mm512_mul_ps(_mm512_mul_ps(poly, pow2), two);
}

SATKERN_AVX512 inline __mmask16 tail_mask(int64_t n) {
  return static_cast<__mmask16>((1u << n) - 1u);
}

template <bool ENT, bool DIST>
SATKERN_AVX512 RowResult row_impl(float* s, int64_t w, int64_t a, int64_t e, int64_t kw0, int64_t qi,
                                  const float* brow, int64_t bsj, float* col) {
  constexpr float inf = std::numeric_limits<float>::infinity();
  constexpr float nan = std::numeric_limits<float>::quiet_NaN();
  constexpr int64_t V = 16;
  const __m512 vneg_inf = _mm512_set1_ps(-inf);

  // pass 1: bias and max; NaN tracked separately (_mm512_max_ps does not propagate it)
  __m512 vmax = vneg_inf;
  __mmask16 any_nan = 0;
  bool scalar_nan = false;
  float m = -inf;
  int64_t j = a;
  if (brow != nullptr && bsj != 1) {
    for (; j < e; ++j) {
      const float x = s[j] + brow[j * bsj];
      s[j] = x;
      if (x != x) scalar_nan = true;
      else if (x > m) m = x;
    }
  } else {
    for (; j < e; j += V) {
      const int64_t n = e - j < V ? e - j : V;
      const __mmask16 k = n == V ? static_cast<__mmask16>(0xFFFF) : tail_mask(n);
      __m512 x = _mm512_mask_loadu_ps(vneg_inf, k, s + j);
      if (brow != nullptr) {
        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(k, brow + j));
        _mm512_mask_storeu_ps(s + j, k, x);
      }
      any_nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
      vmax = _mm512_max_ps(vmax, x);
    }
    const float vm = _mm512_reduce_max_ps(vmax);
    if (vm > m) m = vm;
  }
  for (int64_t i = 0; i < a; ++i) s[i] = 0.f;
  for (int64_t i = e; i < w; ++i) s[i] = 0.f;
  if (any_nan != 0 || scalar_nan || m == inf) {  // NaN (or +inf) score: the row is NaN
    for (int64_t i = a; i < e; ++i) s[i] = nan;
    if (col != nullptr)
      for (int64_t i = a; i < e; ++i) col[i] = nan;
    return {nan, nan, nan, nan, 1.f};
  }
  if (m == -inf) {  // empty distribution
    for (int64_t i = a; i < e; ++i) s[i] = 0.f;
    return {-inf, 0.f, 0.f, 0.f, 0.f};
  }

  // pass 2: p = exp(s - m) and the three sums (two accumulators each)
  const __m512 vm = _mm512_set1_ps(m);
  const __m512 vlow = _mm512_set1_ps(-1e30f);  // keeps p * (s - m) = 0 where s = -inf
  const __m512 vq = _mm512_set1_ps(static_cast<float>(qi));
  const __m512 vstep = _mm512_set1_ps(static_cast<float>(V));
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  __m512 vk = _mm512_add_ps(_mm512_set1_ps(static_cast<float>(kw0 + a)),
                            _mm512_set_ps(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0));
  __m512 vl = _mm512_setzero_ps(), vl2 = _mm512_setzero_ps();
  __m512 vent = _mm512_setzero_ps(), vent2 = _mm512_setzero_ps();
  __m512 vdist = _mm512_setzero_ps(), vdist2 = _mm512_setzero_ps();
  j = a;
  for (; j + 2 * V <= e; j += 2 * V) {
    const __m512 t = _mm512_sub_ps(_mm512_loadu_ps(s + j), vm);
    const __m512 t2 = _mm512_sub_ps(_mm512_loadu_ps(s + j + V), vm);
    const __m512 p = exp_u20(t);
    const __m512 p2 = exp_u20(t2);
    _mm512_storeu_ps(s + j, p);
    _mm512_storeu_ps(s + j + V, p2);
    vl = _mm512_add_ps(vl, p);
    vl2 = _mm512_add_ps(vl2, p2);
    if (ENT) {
      vent = _mm512_fmadd_ps(p, _mm512_max_ps(t, vlow), vent);
      vent2 = _mm512_fmadd_ps(p2, _mm512_max_ps(t2, vlow), vent2);
    }
    if (DIST) {
      vdist = _mm512_fmadd_ps(p, _mm512_and_ps(_mm512_sub_ps(vk, vq), abs_mask), vdist);
      vk = _mm512_add_ps(vk, vstep);
      vdist2 = _mm512_fmadd_ps(p2, _mm512_and_ps(_mm512_sub_ps(vk, vq), abs_mask), vdist2);
      vk = _mm512_add_ps(vk, vstep);
    }
  }
  for (; j < e; j += V) {
    const int64_t n = e - j < V ? e - j : V;
    const __mmask16 k = n == V ? static_cast<__mmask16>(0xFFFF) : tail_mask(n);
    // masked-off lanes load -inf: p = 0 there, and they add nothing to the sums
    const __m512 t = _mm512_sub_ps(_mm512_mask_loadu_ps(vneg_inf, k, s + j), vm);
    const __m512 p = exp_u20(t);
    _mm512_mask_storeu_ps(s + j, k, p);
    vl = _mm512_add_ps(vl, p);
    if (ENT) vent = _mm512_fmadd_ps(p, _mm512_max_ps(t, vlow), vent);
    if (DIST) {
      vdist = _mm512_fmadd_ps(p, _mm512_and_ps(_mm512_sub_ps(vk, vq), abs_mask), vdist);
      vk = _mm512_add_ps(vk, vstep);
    }
  }
  const float l = _mm512_reduce_add_ps(_mm512_add_ps(vl, vl2));
  const float spt = ENT ? _mm512_reduce_add_ps(_mm512_add_ps(vent, vent2)) : 0.f;
  const float spd = DIST ? _mm512_reduce_add_ps(_mm512_add_ps(vdist, vdist2)) : 0.f;
  const float inv = 1.f / l;
  const float logl = std::log(l);
  if (col != nullptr) {  // col[a, e) += inv * p, while the row is in L1
    const __m512 vinv = _mm512_set1_ps(inv);
    for (j = a; j < e; j += V) {
      const int64_t n = e - j < V ? e - j : V;
      const __mmask16 k = n == V ? static_cast<__mmask16>(0xFFFF) : tail_mask(n);
      const __m512 c = _mm512_maskz_loadu_ps(k, col + j);
      _mm512_mask_storeu_ps(col + j, k, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, s + j), vinv, c));
    }
  }
  return {m + logl, logl - spt * inv, spd * inv, inv, inv};
}

}  // namespace


RowResult softmax_row(bool ent, bool dist, float* s, int64_t w, int64_t a, int64_t e, int64_t kw0,
                      int64_t qi, const float* brow, int64_t bsj, float* col) {
  if (ent && dist) return row_impl<true, true>(s, w, a, e, kw0, qi, brow, bsj, col);
  if (ent) return row_impl<true, false>(s, w, a, e, kw0, qi, brow, bsj, col);
  if (dist) return row_impl<false, true>(s, w, a, e, kw0, qi, brow, bsj, col);
  return row_impl<false, false>(s, w, a, e, kw0, qi, brow, bsj, col);
}

}  // namespace avx512
}  // namespace satkern

#endif  // SATKERN_HAVE_AVX512_ROW

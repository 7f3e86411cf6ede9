// Run the CUDA kernels of fused_attention.cuh on the CPU, for tests on machines without a GPU.
//
// Compiled by a plain host compiler (g++ -std=c++20 -pthread, CUDA include dir for the
// headers only; see tests/test_cuda_compile.py), NOT by nvcc and NOT part of the
// extension (setup.py compiles csrc/cuda/*.cu only). Each CTA is emulated by one
// std::thread per CUDA thread; __syncthreads and __syncwarp are std::barriers and
// warp shuffles exchange through a per-warp buffer. CTAs run one after another on the
// same threads, so one buffer serves as shared memory.
//
// What this checks: the kernels' indexing, masks, block skipping, online statistics,
// finalization and colmass pass, in the exact code that runs on the GPU, for the
// FMA matrix-product path, and with -DSATKERN_EMULATE_WMMA the WMMA (tensor core) path
// of float16 / bfloat16 against a host model of the WMMA calls (tile layouts, leading
// dimensions, pointer alignment). What it cannot check: the hardware's own fragment
// handling and rounding, and timing-dependent behaviour of real hardware (use
// compute-sanitizer racecheck for that).
//
// C ABI (ctypes): satkern_emulate(...) below; returns 0, or -1 for an unsupported
// dtype / head dim.
#define SATKERN_HOST_EMULATION 1
#define __DEVICE_LAUNCH_PARAMETERS_H__ 1  // we provide threadIdx / blockIdx (thread-local)

#include <barrier>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <type_traits>

namespace satkern_emu {
thread_local uint3 t_thread;
thread_local uint3 t_block;
thread_local std::barrier<>* t_cta_barrier = nullptr;
struct Warp {
  std::barrier<> bar{32};
  float buf[32];
};
thread_local Warp* t_warp = nullptr;
}  // namespace satkern_emu

#define threadIdx (satkern_emu::t_thread)
#define blockIdx (satkern_emu::t_block)
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

inline void __syncthreads() { satkern_emu::t_cta_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { satkern_emu::t_warp->bar.arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  satkern_emu::Warp* w = satkern_emu::t_warp;
  const int lane = static_cast<int>(satkern_emu::t_thread.x % 32);
  w->buf[lane] = v;
  w->bar.arrive_and_wait();
  const float r = w->buf[lane ^ lane_mask];
  w->bar.arrive_and_wait();
  return r;
}
inline float __expf(float x) { return std::exp(x); }

#ifdef SATKERN_EMULATE_WMMA
// A host model of the WMMA API subset the kernels use (16x16x16 tiles). Every lane holds the
// whole tile (the real fragment layout is opaque, so nothing can depend on it); loads check the
// documented requirements (256-bit aligned pointer, ldm a multiple of 16 bytes) and abort on a
// violation, which on a GPU would be undefined behaviour; stores are done by lane 0 and followed
// by a __syncwarp, as the collective store completes for the whole warp.
#include <cstdio>
#include <cstdlib>
#define SATKERN_WMMA 1
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the kernels use 16x16x16 tiles");
  float x[256];  // element (i, j) of the 16x16 tile at x[i * 16 + j]
};
inline void check_ptr(const void* p, unsigned ldm, size_t elem, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ldm * elem) % 16 != 0) {
    std::fprintf(stderr, "wmma %s: pointer %p (needs 256-bit alignment) or ldm %u (needs a multiple of %zu)\n",
                 what, p, ldm, 16 / elem);
    std::abort();
  }
}
template <typename T> inline float to_f(T v) { return static_cast<float>(v); }
template <> inline float to_f<__half>(__half v) { return __half2float(v); }
template <> inline float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  check_ptr(p, ldm, sizeof(T), "load_matrix_sync");
  constexpr bool row = std::is_same<Layout, row_major>::value;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) f.x[i * 16 + j] = to_f<T>(row ? p[i * ldm + j] : p[j * ldm + i]);
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
  for (float& e : f.x) e = v;
}
template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float r[256];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float s = c.x[i * 16 + j];
      for (int k = 0; k < 16; ++k) s = std::fma(a.x[i * 16 + k], b.x[k * 16 + j], s);
      r[i * 16 + j] = s;
    }
  for (int i = 0; i < 256; ++i) d.x[i] = r[i];
}
void __syncwarp_model();
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  check_ptr(p, ldm, sizeof(float), "store_matrix_sync");
  if (satkern_emu::t_thread.x % 32 == 0)
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 16; ++j) (l == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = f.x[i * 16 + j];
  __syncwarp_model();
}
}  // namespace wmma
}  // namespace nvcuda
inline void nvcuda::wmma::__syncwarp_model() { __syncwarp(); }
#endif  // SATKERN_EMULATE_WMMA

namespace satkern {
namespace cuda {
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
}  // namespace cuda
}  // namespace satkern

#include "fused_attention.cuh"

namespace satkern {
namespace cuda {
alignas(128) unsigned char smem[256 * 1024];  // the kernels' `extern __shared__ smem[]`
}  // namespace cuda
}  // namespace satkern

namespace {

using satkern::cuda::FusedAttentionParams;

template <typename Kernel>
void run_grid(Kernel kernel, const FusedAttentionParams& p, unsigned gx, unsigned gy, unsigned gz, int threads,
              size_t smem_bytes) {
  if (smem_bytes > sizeof(satkern::cuda::smem)) std::abort();
  // One std::thread per CUDA thread for the whole grid; the CTAs run one after another,
  // separated by a barrier (so shared memory is reused exactly as by consecutive CTAs).
  std::barrier<> cta(threads);
  std::vector<std::unique_ptr<satkern_emu::Warp>> warps;
  for (int w = 0; w < threads / 32; ++w) warps.emplace_back(new satkern_emu::Warp());
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      satkern_emu::t_cta_barrier = &cta;
      satkern_emu::t_warp = warps[t / 32].get();
      satkern_emu::t_thread = make_uint3(t, 0, 0);
      for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
          for (unsigned x = 0; x < gx; ++x) {
            // Garbage in shared memory, as on a GPU: reads before writes show up as NaN.
            if (t == 0) std::fill(satkern::cuda::smem, satkern::cuda::smem + smem_bytes, static_cast<unsigned char>(0xff));
            cta.arrive_and_wait();
            satkern_emu::t_block = make_uint3(x, y, z);
            kernel(p);
            cta.arrive_and_wait();  // every thread of this CTA is done (or returned early)
          }
    });
  for (auto& th : pool) th.join();
}

template <typename T, int D>
void emulate(const FusedAttentionParams& p) {
  using Lay = satkern::cuda::detail::Layout<T, D>;
  const bool row_stats = p.entropy || p.distance || p.maxweight || (p.label_mass && p.num_labels > 0);
  const unsigned gq = (p.T + Lay::BM - 1) / Lay::BM, gk = (p.T + Lay::BN - 1) / Lay::BN;
  if (row_stats)
    run_grid(satkern::cuda::fused_attention_fwd_kernel<T, D, true>, p, gq, p.H, p.B, Lay::NT, Lay::kFwdBytes);
  else
    run_grid(satkern::cuda::fused_attention_fwd_kernel<T, D, false>, p, gq, p.H, p.B, Lay::NT, Lay::kFwdBytes);
  if (p.colmass) run_grid(satkern::cuda::colmass_kernel<T, D>, p, gk, p.H, p.B, Lay::NT, Lay::kColBytes);
}

template <typename T>
int emulate_dims(const FusedAttentionParams& p) {
  switch (p.D) {
    case 64: emulate<T, 64>(p); return 0;
    case 128: emulate<T, 128>(p); return 0;
    default: return -1;
  }
}

}  // namespace

extern "C" {

// dtype: 0 float32, 1 float16, 2 bfloat16. Strides in elements (see FusedAttentionParams).
int satkern_emulate(int dtype, const void* q, const void* k, const void* v, const int64_t* q_stride,
                    const int64_t* k_stride, const int64_t* v_stride, void* out, const int64_t* out_stride, float* lse,
                    float* entropy, float* distance, float* maxweight, float* colmass, const float* label_weights,
                    const int64_t* lw_stride, float* label_mass, int num_labels, const int64_t* lengths,
                    const float* bias, const int64_t* bias_stride, const uint8_t* head_mask, int B, int H, int T,
                    int D, int span, int renorm, float scale) {
  FusedAttentionParams p;
  p.q = q;
  p.k = k;
  p.v = v;
  p.out = out;
  for (int i = 0; i < 3; ++i) {
    p.q_stride[i] = q_stride[i];
    p.k_stride[i] = k_stride[i];
    p.v_stride[i] = v_stride[i];
    p.out_stride[i] = out_stride[i];
    p.lw_stride[i] = lw_stride ? lw_stride[i] : 0;
  }
  for (int i = 0; i < 4; ++i) p.bias_stride[i] = bias_stride ? bias_stride[i] : 0;
  p.lse = lse;
  p.entropy = entropy;
  p.distance = distance;
  p.maxweight = maxweight;
  p.colmass = colmass;
  p.label_weights = label_weights;
  p.label_mass = label_mass;
  p.num_labels = num_labels;
  p.lengths = lengths;
  p.bias = bias;
  p.head_mask = head_mask;
  p.B = B;
  p.H = H;
  p.T = T;
  p.D = D;
  p.span = span;
  p.renorm = renorm != 0;
  p.scale = scale;
  if (T == 0 || B == 0 || H == 0) return 0;
  switch (dtype) {
    case 0: return emulate_dims<float>(p);
    case 1: return emulate_dims<__half>(p);
    case 2: return emulate_dims<__nv_bfloat16>(p);
    default: return -1;
  }
}

}  // extern "C"

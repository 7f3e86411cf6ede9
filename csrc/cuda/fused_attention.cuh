// satkern fused self-attention with attention statistics: CUDA device code.
//
// This header compiles WITHOUT torch headers (only the CUDA toolkit), so nvcc can
// check every kernel template on a machine with no GPU and no CUDA torch
// (csrc/cuda/compile_check.cu, tests/test_cuda_compile.py). The torch binding is
// csrc/cuda/attention_cuda.cu; the contract (padding, empty rows, masked heads,
// span modes) is satkern/ops/reference.py, the definitions docs/METRICS.md.
//
// Two passes, as in METRICS.md ("Online forms"):
//
//   pass 1  fused_attention_fwd_kernel   grid (query blocks, H, B)
//           One CTA owns BLOCK_M query rows of one (b, h) and streams the key blocks
//           with the online softmax. Per row it keeps, relative to the running max m:
//             l    = sum_k e^(s_k - m)
//             ent  = sum_k e^(s_k - m) (s_k - m)      -> entropy  = log l - ent / l
//             dist = sum_k e^(s_k - m) abs(q - k)     -> distance = dist / l
//             lm_l = sum_k e^(s_k - m) W[k, l]        -> label_mass = lm / l
//           and maxweight = 1 / l (the largest probability is e^(m - m) / l).
//           When m grows to m', every sum is rescaled by alpha = e^(m - m'); ent also
//           gains (m - m') l:  sum e^(s-m')(s-m') = alpha (ent + (m - m') l).
//           Writes out, lse = m + log l, entropy, distance, maxweight, label_mass.
//
//   pass 2  colmass_kernel               grid (key blocks, H, B)
//           One CTA owns BLOCK_N keys and loops over every query block that can
//           attend to them, recomputing the scores and the exact probabilities
//           e^(s - lse) with the lse stored by pass 1. Each column sum is
//           accumulated by a fixed set of threads in a fixed order and combined in
//           a fixed order: no atomics, bit-for-bit deterministic run to run.
//
// Matrix products: float16 / bfloat16 use the tensor cores through WMMA
// (16x16x16 tiles, float accumulation) on sm_80+; float32 uses plain FMA loops.
// WMMA leaves the accumulator layout unspecified, so the per-row rescaling of the
// output accumulator happens on a float tile in shared memory (P V is stored there
// and added into per-thread registers). Mapping rows to registers with mma.sync
// would save that round trip; it is the next performance step, not a correctness one.
//
// Masks (the contract, satkern/ops/reference.py):
//   * keys k >= length are excluded; key blocks wholly past the length are skipped;
//   * query rows q >= length: out 0, lse 0, statistics 0 (no work beyond writing);
//   * a valid row whose every admissible score is -inf: out 0, lse -inf, statistics 0;
//   * masked head (head_mask 0): no work; out 0, lse and statistics NaN;
//   * span r, mode zero: the softmax and the statistics use every valid key, the
//     value product only the band abs(q - k) <= r (key blocks outside the band skip
//     the value product; they cannot skip the scores, the statistics need them);
//   * span r, mode renorm: keys outside the band are masked before the softmax and
//     key blocks wholly outside the band are skipped (pass 1 and pass 2):
//
//         r = 1, T = 5, renorm admissible keys (x):
//             k 0 1 2 3 4
//         q 0   x x . . .
//           1   x x x . .
//           2   . x x x .
//           3   . . x x x
//           4   . . . x x
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace satkern {
namespace cuda {

// ---------------------------------------------------------------------------
// The interface: plain pointers, strides (in elements) and sizes.
// ---------------------------------------------------------------------------
struct FusedAttentionParams {
  // q, k, v: [B, H, T, D] of the launch's element type; the head dim must be
  // contiguous (stride 1); strides of b, h, t are free.
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t q_stride[3] = {0, 0, 0};  // b, h, t
  int64_t k_stride[3] = {0, 0, 0};
  int64_t v_stride[3] = {0, 0, 0};

  // out: [B, H, T, D], element type of q, head dim contiguous.
  void* out = nullptr;
  int64_t out_stride[3] = {0, 0, 0};

  // float32 [B, H, T], contiguous. lse always; the others nullptr = not requested.
  float* lse = nullptr;
  float* entropy = nullptr;
  float* distance = nullptr;
  float* maxweight = nullptr;
  float* colmass = nullptr;  // written by pass 2 only

  // label_weights: float32 [B, T, L] (strides b, t, l); label_mass: float32
  // [B, H, T, L] contiguous. Both nullptr (and num_labels 0) when not requested.
  const float* label_weights = nullptr;
  int64_t lw_stride[3] = {0, 0, 0};
  float* label_mass = nullptr;
  int num_labels = 0;

  // int64 [B]: valid frames per utterance (clamped to [0, T] in the kernels).
  const int64_t* lengths = nullptr;

  // bias: float32, read as bias[b*s0 + h*s1 + q*s2 + k*s3]; a stride 0 broadcasts.
  const float* bias = nullptr;
  int64_t bias_stride[4] = {0, 0, 0, 0};

  // head_mask: bool/uint8 [B, H] contiguous, nonzero = head kept; nullptr = all kept.
  const uint8_t* head_mask = nullptr;

  int B = 0, H = 0, T = 0, D = 0;
  int span = -1;        // < 0: no span
  bool renorm = false;  // span mode: false = zero, true = renorm
  float scale = 1.0f;   // score = scale * q.k + bias
};

// Head dims with compiled kernels (template instantiations in the launchers below).
inline constexpr int kSupportedHeadDims[] = {64, 128};
inline bool supported_head_dim(int d) {
  for (int s : kSupportedHeadDims)
    if (s == d) return true;
  return false;
}
inline const char* supported_head_dims_text() { return "64, 128"; }

namespace detail {

// ---------------------------------------------------------------------------
// Element types
// ---------------------------------------------------------------------------
template <typename T>
struct Elem;

template <>
struct Elem<float> {
  static __device__ __forceinline__ float to_float(float x) { return x; }
  static __device__ __forceinline__ float from_float(float x) { return x; }
  static constexpr bool kTensorCore = false;
  static constexpr int kSmemPad = 4;  // keeps rows 16-byte aligned, WMMA-free
};

template <>
struct Elem<__half> {
  static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half from_float(float x) { return __float2half_rn(x); }
  static constexpr bool kTensorCore = true;
  static constexpr int kSmemPad = 8;  // WMMA ldm must be a multiple of 8 for 16-bit types
};

template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
  static constexpr bool kTensorCore = true;
  static constexpr int kSmemPad = 8;
};

// Tensor-core (WMMA) code exists only for sm_80+ device passes (bf16 WMMA needs
// sm_80); the host pass and older architectures see the FMA path, so the header
// still compiles for them.
// (csrc/cuda/host_emulation.cpp predefines it to run the WMMA path against a host model of WMMA.)
#ifndef SATKERN_WMMA
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 800)
#define SATKERN_WMMA 1
#else
#define SATKERN_WMMA 0
#endif
#endif

// ---------------------------------------------------------------------------
// Tile sizes and the shared-memory layout
// ---------------------------------------------------------------------------
template <typename T, int D>
struct TileConfig {
  static constexpr int kBlockM = 64;  // query rows per CTA
  static constexpr int kBlockN = 64;  // keys per block
  // 8 warps at D = 128 keep the output accumulator at 32 floats per thread (no spills).
  static constexpr int kThreads = D >= 128 ? 256 : 128;
};

template <int D>
struct TileConfig<float, D> {  // float tiles are 2x the bytes: halve both sides
  static constexpr int kBlockM = 32;
  static constexpr int kBlockN = 32;
  static constexpr int kThreads = 128;
};

__host__ __device__ constexpr size_t round_up_128(size_t x) { return (x + 127) / 128 * 128; }

template <typename T, int D>
struct Layout {
  using Cfg = TileConfig<T, D>;
  static constexpr int BM = Cfg::kBlockM;
  static constexpr int BN = Cfg::kBlockN;
  static constexpr int NT = Cfg::kThreads;
  static constexpr int kWarps = NT / 32;
  static constexpr int ldQKV = D + Elem<T>::kSmemPad;     // sQ, sK, sV rows (elements)
  static constexpr int ldS = BN + 4;                      // float scores / probabilities
  static constexpr int ldP = BN + Elem<T>::kSmemPad;      // probabilities for P V, element type
  static constexpr int ldO = D + 4;                       // float P V tile

  // pass 1
  static constexpr size_t offQ = 0;
  static constexpr size_t offK = round_up_128(offQ + sizeof(T) * BM * ldQKV);
  static constexpr size_t offV = round_up_128(offK + sizeof(T) * BN * ldQKV);
  static constexpr size_t offS = round_up_128(offV + sizeof(T) * BN * ldQKV);
  static constexpr size_t offP = round_up_128(offS + sizeof(float) * BM * ldS);
  static constexpr size_t offO = round_up_128(offP + sizeof(T) * BM * ldP);
  static constexpr size_t offRow = round_up_128(offO + sizeof(float) * BM * ldO);
  static constexpr int kRowArrays = 5;  // m, l, ent, dist, alpha
  static constexpr size_t kFwdBytes = round_up_128(offRow + sizeof(float) * BM * kRowArrays);

  // pass 2 (reuses the names; K block fixed, Q blocks streamed)
  static constexpr size_t cOffK = 0;
  static constexpr size_t cOffQ = round_up_128(cOffK + sizeof(T) * BN * ldQKV);
  static constexpr size_t cOffS = round_up_128(cOffQ + sizeof(T) * BM * ldQKV);
  static constexpr size_t cOffLse = round_up_128(cOffS + sizeof(float) * BM * ldS);
  static constexpr size_t cOffRed = round_up_128(cOffLse + sizeof(float) * BM);
  static constexpr size_t kColBytes = round_up_128(cOffRed + sizeof(float) * NT);

  static_assert(D % 16 == 0, "head dim must be a multiple of 16 (WMMA k-step)");
  static_assert(BM % 16 == 0 && BN % 16 == 0, "tiles must be multiples of 16");
  static_assert(NT % 32 == 0, "whole warps");
  static_assert((BM * D) % NT == 0, "output accumulator split evenly over threads");
  static_assert(NT % BN == 0, "colmass: whole column groups");
  static_assert(BN % 32 == 0, "softmax stage: whole warp sweeps per row");
};

// ---------------------------------------------------------------------------
// Global -> shared tile loads (rows past `valid_rows` are zero-filled)
// ---------------------------------------------------------------------------
template <typename T, int ROWS, int D, int NT>
__device__ __forceinline__ void load_rows(T* __restrict__ s, int ld, const T* __restrict__ g, int64_t row_stride,
                                          int valid_rows) {
  constexpr int kVec = 16 / sizeof(T);  // elements per 16-byte vector
  const bool vec_ok = (reinterpret_cast<uintptr_t>(g) % 16 == 0) && ((row_stride * sizeof(T)) % 16 == 0);
  if (vec_ok) {
    constexpr int kPerRow = D / kVec;
    for (int i = threadIdx.x; i < ROWS * kPerRow; i += NT) {
      const int r = i / kPerRow, c = (i % kPerRow) * kVec;
      uint4 val = make_uint4(0u, 0u, 0u, 0u);
      if (r < valid_rows) val = *reinterpret_cast<const uint4*>(g + r * row_stride + c);
      *reinterpret_cast<uint4*>(s + r * ld + c) = val;  // ld * sizeof(T) is a multiple of 16
    }
  } else {
    for (int i = threadIdx.x; i < ROWS * D; i += NT) {
      const int r = i / D, c = i % D;
      s[r * ld + c] = r < valid_rows ? g[r * row_stride + c] : Elem<T>::from_float(0.0f);
    }
  }
}

// ---------------------------------------------------------------------------
// Block-wide tile products (all threads of the CTA take part; no syncs inside)
// ---------------------------------------------------------------------------
// C[M x N] (float) = A[M x K] * op(B), A and B row-major in shared memory: op(B) = B^T for B stored
// N x K (B_TRANSPOSED, the scores Q K^T), op(B) = B for B stored K x N (the output P V).
template <typename T, int M, int N, int K, int NT, bool B_TRANSPOSED>
__device__ __forceinline__ void gemm_tile(const T* __restrict__ A, int lda, const T* __restrict__ B, int ldb,
                                          float* __restrict__ C, int ldc) {
#if SATKERN_WMMA
  if constexpr (Elem<T>::kTensorCore) {
    namespace wmma = nvcuda::wmma;
    // B^T (K x N) stored as B (N x K) row-major is column-major K x N with ld ldb
    using BLayout = std::conditional_t<B_TRANSPOSED, wmma::col_major, wmma::row_major>;
    const int warp = threadIdx.x / 32;
    constexpr int kTiles = (M / 16) * (N / 16);
    for (int t = warp; t < kTiles; t += NT / 32) {
      const int tm = t / (N / 16), tn = t % (N / 16);
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < K; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, BLayout> b;
        wmma::load_matrix_sync(a, A + tm * 16 * lda + kk, lda);
        wmma::load_matrix_sync(b, B_TRANSPOSED ? B + tn * 16 * ldb + kk : B + kk * ldb + tn * 16, ldb);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(C + tm * 16 * ldc + tn * 16, acc, ldc, wmma::mem_row_major);
    }
  } else
#endif
  {
  for (int i = threadIdx.x; i < M * N; i += NT) {
    const int r = i / N, c = i % N;
    float acc = 0.0f;
#pragma unroll 8
    for (int kk = 0; kk < K; ++kk)
      acc = fmaf(Elem<T>::to_float(A[r * lda + kk]),
                 Elem<T>::to_float(B_TRANSPOSED ? B[c * ldb + kk] : B[kk * ldb + c]), acc);
    C[r * ldc + c] = acc;
  }
  }
}

// C = A B^T (B stored N x K)
template <typename T, int M, int N, int K, int NT>
__device__ __forceinline__ void gemm_abt(const T* __restrict__ A, int lda, const T* __restrict__ B, int ldb,
                                         float* __restrict__ C, int ldc) {
  gemm_tile<T, M, N, K, NT, true>(A, lda, B, ldb, C, ldc);
}

// C = A B (B stored K x N)
template <typename T, int M, int N, int K, int NT>
__device__ __forceinline__ void gemm_ab(const T* __restrict__ A, int lda, const T* __restrict__ B, int ldb,
                                        float* __restrict__ C, int ldc) {
  gemm_tile<T, M, N, K, NT, false>(A, lda, B, ldb, C, ldc);
}

// max that propagates NaN. fmaxf returns the other operand when one is NaN, so a row whose scores
// are all NaN (NaN in q) kept m = -inf and came out as an empty row (out 0, lse -inf, statistics 0,
// skipped by colmass); the contract (satkern/ops/reference.py) makes such a row NaN.
// (x != x is the NaN test; --use_fast_math does not assume finite values in nvcc.)
__device__ __forceinline__ float max_nan(float a, float b) { return (a != a || b != b) ? NAN : fmaxf(a, b); }

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = max_nan(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ __forceinline__ int clamp_length(int64_t len, int T) {
  return len < 0 ? 0 : (len > T ? T : static_cast<int>(len));
}

__device__ __forceinline__ bool head_kept(const FusedAttentionParams& p, int b, int h) {
  return p.head_mask == nullptr || p.head_mask[static_cast<int64_t>(b) * p.H + h] != 0;
}

__device__ __forceinline__ float bias_at(const FusedAttentionParams& p, int b, int h, int qi, int ki) {
  return p.bias[b * p.bias_stride[0] + h * p.bias_stride[1] + qi * p.bias_stride[2] + ki * p.bias_stride[3]];
}

// Rows [q0, q0 + rows) of one (b, h) that do no work: padded rows (fill 0) or a
// masked head (fill NaN for lse and statistics). out is 0 in both cases.
template <typename T, int D, int NT>
__device__ void write_idle_rows(const FusedAttentionParams& p, int b, int h, int q0, int rows, float fill) {
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1];
  for (int i = threadIdx.x; i < rows * D; i += NT) {
    const int r = i / D, c = i % D;
    out[(q0 + r) * p.out_stride[2] + c] = Elem<T>::from_float(0.0f);
  }
  for (int r = threadIdx.x; r < rows; r += NT) {
    const int64_t o = bh * p.T + q0 + r;
    p.lse[o] = fill;
    if (p.entropy) p.entropy[o] = fill;
    if (p.distance) p.distance[o] = fill;
    if (p.maxweight) p.maxweight[o] = fill;
  }
  if (p.label_mass) {
    const int L = p.num_labels;
    float* lm = p.label_mass + (bh * p.T + q0) * L;
    for (int i = threadIdx.x; i < rows * L; i += NT) lm[i] = fill;
  }
}

}  // namespace detail

// ---------------------------------------------------------------------------
// Pass 1: out, lse, entropy, distance, maxweight, label_mass
// kRowStats = false compiles the statistics away (only out and lse).
// ---------------------------------------------------------------------------
template <typename T, int D, bool kRowStats>
__global__ void __launch_bounds__(detail::TileConfig<T, D>::kThreads)
    fused_attention_fwd_kernel(const FusedAttentionParams p) {
  using namespace detail;
  using Lay = Layout<T, D>;
  constexpr int BM = Lay::BM, BN = Lay::BN, NT = Lay::NT, kWarps = Lay::kWarps;
  constexpr int kAccPerThread = BM * D / NT;
  constexpr int kColsPerLane = BN / 32;
  constexpr float kNegInf = -INFINITY;

  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem + Lay::offQ);
  T* sK = reinterpret_cast<T*>(smem + Lay::offK);
  T* sV = reinterpret_cast<T*>(smem + Lay::offV);
  float* sS = reinterpret_cast<float*>(smem + Lay::offS);
  T* sP = reinterpret_cast<T*>(smem + Lay::offP);
  float* sO = reinterpret_cast<float*>(smem + Lay::offO);
  float* row_m = reinterpret_cast<float*>(smem + Lay::offRow);
  float* row_l = row_m + BM;
  float* row_ent = row_l + BM;
  float* row_dist = row_ent + BM;
  float* row_alpha = row_dist + BM;

  const int q0 = blockIdx.x * BM;
  const int h = blockIdx.y, b = blockIdx.z;
  const int T_ = p.T;
  if (q0 >= T_) return;
  const int rows = min(BM, T_ - q0);  // rows of this CTA inside [0, T)
  const int len = clamp_length(p.lengths[b], T_);
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;

  if (!head_kept(p, b, h)) {
    write_idle_rows<T, D, NT>(p, b, h, q0, rows, NAN);
    return;
  }
  if (q0 >= len) {
    write_idle_rows<T, D, NT>(p, b, h, q0, rows, 0.0f);
    return;
  }

  const int valid_rows = min(rows, len - q0);  // rows with q < length (>= 1 here)
  const int q_last = q0 + valid_rows - 1;
  const bool has_span = p.span >= 0;
  const bool band_mask = has_span && p.renorm;  // mask before the softmax
  const bool band_zero = has_span && !p.renorm; // zero after the softmax (value product only)
  const int L = p.num_labels;
  const bool want_lm = kRowStats && p.label_mass != nullptr && L > 0;

  const T* gq = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1] + q0 * p.q_stride[2];
  const T* gk = static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
  const T* gv = static_cast<const T*>(p.v) + b * p.v_stride[0] + h * p.v_stride[1];
  float* glm = want_lm ? p.label_mass + (bh * T_ + q0) * L : nullptr;
  const float* gw = want_lm ? p.label_weights + b * p.lw_stride[0] : nullptr;

  load_rows<T, BM, D, NT>(sQ, Lay::ldQKV, gq, p.q_stride[2], valid_rows);
  for (int r = threadIdx.x; r < BM; r += NT) {
    row_m[r] = kNegInf;
    row_l[r] = 0.0f;
    row_ent[r] = 0.0f;
    row_dist[r] = 0.0f;
    row_alpha[r] = 0.0f;
  }
  if (want_lm)
    for (int i = threadIdx.x; i < valid_rows * L; i += NT) glm[i] = 0.0f;

  float acc[kAccPerThread];
#pragma unroll
  for (int i = 0; i < kAccPerThread; ++i) acc[i] = 0.0f;

  // Keys this row block can see: [0, len), narrowed to the band in renorm mode.
  int k_begin = 0, k_end = len;
  if (band_mask) {
    k_begin = max(0, q0 - p.span);
    k_end = min(len, q_last + p.span + 1);
  }
  const int kb_begin = k_begin / BN;
  const int kb_end = (k_end + BN - 1) / BN;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  for (int kb = kb_begin; kb < kb_end; ++kb) {
    const int k0 = kb * BN;
    const int nk = min(BN, len - k0);  // valid keys in this block (>= 1)
    // In zero mode a key block wholly outside the band contributes nothing to P V.
    const bool need_pv = !band_zero || (k0 <= q_last + p.span && k0 + nk - 1 >= q0 - p.span);

    __syncthreads();  // previous iteration is done with sK, sV, sS, sP, row_alpha
    load_rows<T, BN, D, NT>(sK, Lay::ldQKV, gk + k0 * p.k_stride[2], p.k_stride[2], nk);
    if (need_pv) load_rows<T, BN, D, NT>(sV, Lay::ldQKV, gv + k0 * p.v_stride[2], p.v_stride[2], nk);
    __syncthreads();

    gemm_abt<T, BM, BN, D, NT>(sQ, Lay::ldQKV, sK, Lay::ldQKV, sS, Lay::ldS);
    __syncthreads();

    // Online softmax and statistics: one warp per row, kColsPerLane keys per lane.
    for (int r = warp; r < BM; r += kWarps) {
      const int qi = q0 + r;
      const bool row_ok = r < valid_rows;
      float sv[kColsPerLane];
      float mx = kNegInf;
#pragma unroll
      for (int j = 0; j < kColsPerLane; ++j) {
        const int c = lane + 32 * j, ki = k0 + c;
        bool ok = row_ok && c < nk;
        if (band_mask) ok = ok && abs(qi - ki) <= p.span;
        float s = kNegInf;
        if (ok) {
          s = sS[r * Lay::ldS + c] * p.scale;
          if (p.bias) s += bias_at(p, b, h, qi, ki);
        }
        sv[j] = s;
        mx = max_nan(mx, s);
      }
      mx = warp_max(mx);
      const float m_old = row_m[r];  // same value in every lane (written by lane 0 last round)
      const float m_new = max_nan(m_old, mx);  // NaN once any score of the row was NaN
      const float m_use = m_new == kNegInf ? 0.0f : m_new;  // all -inf so far: nothing to rescale
      const float alpha = m_old == kNegInf ? 0.0f : __expf(m_old - m_use);
      float l_part = 0.0f, ent_part = 0.0f, dist_part = 0.0f;
#pragma unroll
      for (int j = 0; j < kColsPerLane; ++j) {
        const int c = lane + 32 * j, ki = k0 + c;
        const float e = __expf(sv[j] - m_use);  // exp(-inf) = 0 for masked keys
        l_part += e;
        if (kRowStats) {
          if (e > 0.0f) ent_part += e * (sv[j] - m_use);  // 0 * (-inf) would be NaN
          dist_part += e * static_cast<float>(abs(qi - ki));
        }
        if (want_lm) sS[r * Lay::ldS + c] = e;  // unnormalized A (before span zeroing)
        const bool in_band = !band_zero || abs(qi - ki) <= p.span;
        sP[r * Lay::ldP + c] = Elem<T>::from_float(in_band ? e : 0.0f);
      }
      l_part = warp_sum(l_part);
      if (kRowStats) {
        ent_part = warp_sum(ent_part);
        dist_part = warp_sum(dist_part);
      }
      __syncwarp();
      if (lane == 0) {
        const float l_old = row_l[r];
        row_l[r] = alpha * l_old + l_part;
        if (kRowStats) {
          row_ent[r] = m_old == kNegInf ? ent_part : alpha * (row_ent[r] + (m_old - m_use) * l_old) + ent_part;
          row_dist[r] = alpha * row_dist[r] + dist_part;
        }
        row_m[r] = m_new;
        row_alpha[r] = alpha;
      }
    }
    __syncthreads();

    if (need_pv) {
      gemm_ab<T, BM, D, BN, NT>(sP, Lay::ldP, sV, Lay::ldQKV, sO, Lay::ldO);
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < kAccPerThread; ++i) {
      const int e = threadIdx.x + i * NT, r = e / D, c = e % D;
      acc[i] = acc[i] * row_alpha[r] + (need_pv ? sO[r * Lay::ldO + c] : 0.0f);
    }
    if constexpr (kRowStats) {
      if (want_lm) {
      // label_mass accumulators live in the output itself (rows owned by this CTA,
      // each element by one thread): lm = lm * alpha + sum_k e_k W[k, l].
      for (int i = threadIdx.x; i < valid_rows * L; i += NT) {
        const int r = i / L, l = i % L;
        const float* w = gw + k0 * p.lw_stride[1] + l * p.lw_stride[2];
        float s = 0.0f;
        for (int c = 0; c < nk; ++c) s = fmaf(sS[r * Lay::ldS + c], w[c * p.lw_stride[1]], s);
        glm[i] = glm[i] * row_alpha[r] + s;
      }
      }
    }
  }
  __syncthreads();

  // Finalize. Rows q >= length inside this block: zeros; empty rows: out 0, lse -inf.
  T* gout = static_cast<T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1] + q0 * p.out_stride[2];
#pragma unroll
  for (int i = 0; i < kAccPerThread; ++i) {
    const int e = threadIdx.x + i * NT, r = e / D, c = e % D;
    if (r < rows) {
      float o = 0.0f;
      if (r < valid_rows && row_m[r] != kNegInf) o = acc[i] / row_l[r];
      gout[r * p.out_stride[2] + c] = Elem<T>::from_float(o);
    }
  }
  for (int r = threadIdx.x; r < rows; r += NT) {
    const int64_t o = bh * T_ + q0 + r;
    float lse = 0.0f, ent = 0.0f, dist = 0.0f, mw = 0.0f;
    if (r < valid_rows) {
      if (row_m[r] == kNegInf) {
        lse = kNegInf;
      } else {
        const float l = row_l[r], log_l = logf(l);
        lse = row_m[r] + log_l;
        if (kRowStats) {
          ent = log_l - row_ent[r] / l;
          dist = row_dist[r] / l;
          mw = 1.0f / l;
        }
      }
    }
    p.lse[o] = lse;
    if (kRowStats) {
      if (p.entropy) p.entropy[o] = ent;
      if (p.distance) p.distance[o] = dist;
      if (p.maxweight) p.maxweight[o] = mw;
    }
  }
  if (kRowStats && p.label_mass != nullptr && p.num_labels > 0) {
    const int Ll = p.num_labels;
    float* lm = p.label_mass + (bh * T_ + q0) * Ll;
    for (int i = threadIdx.x; i < rows * Ll; i += NT) {
      const int r = i / Ll;
      float val = 0.0f;
      if (r < valid_rows && row_m[r] != kNegInf) val = lm[i] / row_l[r];
      lm[i] = val;  // same thread wrote lm[i] in the loop above (i < valid_rows * L)
    }
  }
}

// ---------------------------------------------------------------------------
// Pass 2: colmass[k] = sum_q A[q, k] over valid queries, from the stored lse.
// ---------------------------------------------------------------------------
template <typename T, int D>
__global__ void __launch_bounds__(detail::TileConfig<T, D>::kThreads) colmass_kernel(const FusedAttentionParams p) {
  using namespace detail;
  using Lay = Layout<T, D>;
  constexpr int BM = Lay::BM, BN = Lay::BN, NT = Lay::NT;
  constexpr int kGroups = NT / BN;  // threads summing one column, each a fixed row subset
  constexpr float kNegInf = -INFINITY;

  extern __shared__ __align__(128) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem + Lay::cOffK);
  T* sQ = reinterpret_cast<T*>(smem + Lay::cOffQ);
  float* sS = reinterpret_cast<float*>(smem + Lay::cOffS);
  float* sLse = reinterpret_cast<float*>(smem + Lay::cOffLse);
  float* sRed = reinterpret_cast<float*>(smem + Lay::cOffRed);

  const int k0 = blockIdx.x * BN;
  const int h = blockIdx.y, b = blockIdx.z;
  const int T_ = p.T;
  if (k0 >= T_) return;
  const int cols = min(BN, T_ - k0);
  const int len = clamp_length(p.lengths[b], T_);
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  float* gcol = p.colmass + bh * T_ + k0;

  if (!head_kept(p, b, h) || k0 >= len) {
    const float fill = head_kept(p, b, h) ? 0.0f : NAN;
    for (int c = threadIdx.x; c < cols; c += NT) gcol[c] = fill;
    return;
  }
  const int nk = min(cols, len - k0);  // valid keys of this block
  const bool band_mask = p.span >= 0 && p.renorm;

  const T* gq = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  const T* gk = static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1] + k0 * p.k_stride[2];
  const float* glse = p.lse + bh * T_;
  load_rows<T, BN, D, NT>(sK, Lay::ldQKV, gk, p.k_stride[2], nk);

  // Queries that can attend to these keys: [0, len), narrowed to the band in renorm.
  int q_begin = 0, q_end = len;
  if (band_mask) {
    q_begin = max(0, k0 - p.span);
    q_end = min(len, k0 + nk - 1 + p.span + 1);
  }
  const int c = threadIdx.x % BN, group = threadIdx.x / BN;
  const int ki = k0 + c;
  float col = 0.0f;

  for (int qb = q_begin / BM; qb < (q_end + BM - 1) / BM; ++qb) {
    const int q0 = qb * BM;
    const int valid_rows = min(BM, len - q0);
    __syncthreads();  // previous iteration is done with sQ, sS, sLse
    load_rows<T, BM, D, NT>(sQ, Lay::ldQKV, gq + q0 * p.q_stride[2], p.q_stride[2], valid_rows);
    for (int r = threadIdx.x; r < BM; r += NT) sLse[r] = r < valid_rows ? glse[q0 + r] : kNegInf;
    __syncthreads();
    gemm_abt<T, BM, BN, D, NT>(sQ, Lay::ldQKV, sK, Lay::ldQKV, sS, Lay::ldS);
    __syncthreads();
    if (c < nk) {
      for (int r = group; r < valid_rows; r += kGroups) {
        const int qi = q0 + r;
        const float lse = sLse[r];
        if (lse == kNegInf) continue;  // empty row: A is 0
        if (band_mask && abs(qi - ki) > p.span) continue;
        float s = sS[r * Lay::ldS + c] * p.scale;
        if (p.bias) s += bias_at(p, b, h, qi, ki);
        col += __expf(s - lse);  // exp(-inf) = 0 for a bias-masked key
      }
    }
  }
  sRed[threadIdx.x] = col;
  __syncthreads();
  for (int cc = threadIdx.x; cc < cols; cc += NT) {
    float total = 0.0f;
#pragma unroll
    for (int g = 0; g < kGroups; ++g) total += sRed[g * BN + cc];  // fixed order: deterministic
    gcol[cc] = cc < nk ? total : 0.0f;
  }
}

#ifndef SATKERN_HOST_EMULATION  // csrc/cuda/host_emulation.cpp launches the kernels its own way
// ---------------------------------------------------------------------------
// Host launchers. Each returns the first CUDA error (attribute set or launch);
// cudaErrorInvalidValue for an unsupported head dim or a grid too large.
// ---------------------------------------------------------------------------
namespace detail {

inline bool grid_fits(const FusedAttentionParams& p) {
  return p.H >= 1 && p.B >= 1 && p.H <= 65535 && p.B <= 65535;  // gridDim.y, gridDim.z limits
}

template <typename T, int D, bool kRowStats>
cudaError_t launch_fwd_impl(const FusedAttentionParams& p, cudaStream_t stream) {
  using Lay = Layout<T, D>;
  auto kernel = fused_attention_fwd_kernel<T, D, kRowStats>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(Lay::kFwdBytes));
  if (err != cudaSuccess) return err;
  const dim3 grid((p.T + Lay::BM - 1) / Lay::BM, p.H, p.B);
  kernel<<<grid, Lay::NT, Lay::kFwdBytes, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t launch_colmass_impl(const FusedAttentionParams& p, cudaStream_t stream) {
  using Lay = Layout<T, D>;
  auto kernel = colmass_kernel<T, D>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(Lay::kColBytes));
  if (err != cudaSuccess) return err;
  const dim3 grid((p.T + Lay::BN - 1) / Lay::BN, p.H, p.B);
  kernel<<<grid, Lay::NT, Lay::kColBytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace detail

// Shared memory one launch needs (bytes); 0 for an unsupported head dim.
template <typename T>
size_t fwd_smem_bytes(int d) {
  switch (d) {
    case 64: return detail::Layout<T, 64>::kFwdBytes;
    case 128: return detail::Layout<T, 128>::kFwdBytes;
    default: return 0;
  }
}

// Pass 1. Row statistics are computed when any of entropy, distance, maxweight or
// label_mass is requested (non-null), else the kernel without them runs.
template <typename T>
cudaError_t launch_fused_attention_fwd(const FusedAttentionParams& p, cudaStream_t stream) {
  if (p.T == 0 || p.B == 0 || p.H == 0) return cudaSuccess;
  if (!detail::grid_fits(p)) return cudaErrorInvalidValue;
  const bool row_stats = p.entropy || p.distance || p.maxweight || (p.label_mass && p.num_labels > 0);
  switch (p.D) {
    case 64:
      return row_stats ? detail::launch_fwd_impl<T, 64, true>(p, stream) : detail::launch_fwd_impl<T, 64, false>(p, stream);
    case 128:
      return row_stats ? detail::launch_fwd_impl<T, 128, true>(p, stream)
                       : detail::launch_fwd_impl<T, 128, false>(p, stream);
    default:
      return cudaErrorInvalidValue;  // see supported_head_dim()
  }
}

// Pass 2 (needs pass 1's lse in p.lse). No-op when p.colmass is null.
template <typename T>
cudaError_t launch_colmass(const FusedAttentionParams& p, cudaStream_t stream) {
  if (p.colmass == nullptr || p.T == 0 || p.B == 0 || p.H == 0) return cudaSuccess;
  if (!detail::grid_fits(p)) return cudaErrorInvalidValue;
  switch (p.D) {
    case 64: return detail::launch_colmass_impl<T, 64>(p, stream);
    case 128: return detail::launch_colmass_impl<T, 128>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

// Both passes in order on one stream.
template <typename T>
cudaError_t launch_fused_attention(const FusedAttentionParams& p, cudaStream_t stream) {
  cudaError_t err = launch_fused_attention_fwd<T>(p, stream);
  if (err != cudaSuccess) return err;
  return launch_colmass<T>(p, stream);
}
#endif  // SATKERN_HOST_EMULATION

}  // namespace cuda
}  // namespace satkern

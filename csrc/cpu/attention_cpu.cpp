// CPU implementation of satkern::fused_attention (schema declared in satkern/ops/schema.py).
//
// Semantics are those of satkern/ops/reference.py (see its docstring and METRICS.md):
//   * padded query rows (q >= length): out 0, lse 0, statistics 0; padded keys take no part;
//   * a valid row whose admissible scores are all -inf: out 0, lse -inf, statistics 0;
//   * a masked head (head_mask false): out 0, lse and statistics NaN, and no work is done;
//   * span >= 0, mode "zero" (renorm false): the output uses A zeroed off the band |q-k| <= span
//     (no renormalization); the statistics describe A over all valid keys;
//   * span >= 0, mode "renorm": keys off the band are masked before the softmax; the kernel only
//     reads keys inside the band window of each row block.
//
// Design (never allocates anything T x T):
//   * inputs are converted once to the compute type (float for float32/bfloat16/float16, double
//     for float64) and made contiguous: O(B*H*T*D) memory;
//   * work is split into tasks (b, h, block of BQ query rows), run with at::parallel_for; a task
//     holds its block's scores over the admissible key window (BQ x window, one buffer per
//     thread), so every statistic comes out of one pass:
//       S   = scale * Q_blk K_win^T (+ bias)              BLAS gemm
//       per row (passes over the row while it is in L1): m = max, p = exp(s - m), l = sum p,
//                lse = m + log l, entropy = log l - sum p (s - m) / l,
//                distance = sum p |q - k| / l, maxweight = 1 / l,
//                colmass partial[j] += p[j] / l
//       the normalization A = p / l is folded into the products below (rows scaled by 1/l):
//       label_mass = diag(1/l) P W_win                     BLAS gemm
//       out = diag(1/l) P' V_win (P' = P zeroed off band in zero-span mode; band window only)
//   * the row pass is vectorized with at::vec and built twice (row_vec.inc.h): a portable baseline
//     (row_generic.cpp) and an AVX2+FMA build (row_avx2.cpp, its own compile flags), chosen at run
//     time from the CPU's features, so the extension loads on any x86-64; for float32 on CPUs
//     with AVX-512F/DQ a hand-written AVX-512 version (row_avx512.cpp) is used instead, unless
//     SATKERN_CPU_NO_AVX512=1 (SATKERN_CPU_NO_AVX2=1 likewise forces the baseline).
//     SATKERN_CPU_BLOCK_ROWS=n overrides the query block size
//     (tuning only).
//   * colmass: tasks are ordered head-major (all blocks of head 0, then head 1, ...) and
//     at::parallel_for (OpenMP) hands each thread one contiguous range of tasks, so a thread owns
//     every head inside its range and shares at most the two at its ends. It sums the column
//     sums of its current head's blocks into one [T] double buffer and writes a head it covered
//     whole straight into colmass; a head cut by a range boundary leaves its part in a small
//     list, and those parts are added up in range order after the parallel region. Memory:
//     O(T) per thread plus the output, never a [B*H*T] buffer per thread. For a fixed thread
//     count the ranges, and so the result, are bitwise deterministic (the last bits may change
//     with the thread count).
//
// NaN: a NaN (or +inf) score makes its row NaN (out, lse, statistics, and colmass of the
// row's admissible keys), as in the reference. Padded rows of q/k/v/label_weights and bias
// entries of non-admissible keys are never read. Within a row block's key window the GEMMs
// multiply zero weights by values of keys off a row's band (zero-span and renorm modes), so a
// NaN in v/label_weights at such a key reaches the rows of that block (the reference, which
// multiplies the zeroed map by all of v, propagates it to every row).
#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "cpu/bias.h"
#include "cpu/blas.h"
#include "cpu/row_avx512.h"
#include "cpu/row_kernels.h"

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <tuple>
#include <type_traits>
#include <vector>

namespace satkern {
namespace {

using at::Tensor;
using at::vec::Vectorized;

constexpr const char* kOp = "satkern::fused_attention (cpu): ";

// Row-major GEMM, beta = 0:  C[M,N] (ldc) = alpha * A[M,K] (lda) * op(B), op(B) = B[N,K]^T when trans_b.
template <typename T>
inline void rm_gemm(bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                    const T* B, int64_t ldb, T* C, int64_t ldc) {
  blas::gemm<T>(false, trans_b, M, N, K, alpha, A, lda, B, ldb, T(0), C, ldc);
}

// rows[M, N] (ld) *= f[M]
template <typename T>
void scale_rows(int64_t M, int64_t N, const T* f, T* rows, int64_t ld) {
  using Vec = Vectorized<T>;
  for (int64_t i = 0; i < M; ++i) {
    T* r = rows + i * ld;
    const Vec vf(f[i]);
    int64_t j = 0;
    for (; j + Vec::size() <= N; j += Vec::size()) (Vec::loadu(r + j) * vf).store(r + j);
    for (; j < N; ++j) r[j] *= f[i];
  }
}


#if SATKERN_HAVE_AVX512_ROW
template <bool ENT, bool DIST>
RowStats<float> softmax_row_avx512(float* s, int64_t w, int64_t a, int64_t e, int64_t kw0, int64_t qi,
                                   const float* brow, int64_t bsj, float* col) {
  const avx512::RowResult r = avx512::softmax_row(ENT, DIST, s, w, a, e, kw0, qi, brow, bsj, col);
  return {r.lse, r.entropy, r.distance, r.maxweight, r.factor};
}
#endif

inline bool env_is_1(const char* name) {
  const char* env = std::getenv(name);
  return env != nullptr && env[0] == '1';
}

// The AVX-512 row pass is used for float32 when the CPU has AVX-512F/DQ, unless the
// environment sets SATKERN_CPU_NO_AVX512=1 (tests use it to cover the AVX2/generic path).
inline bool use_avx512_rows() { return cpu_has_avx512() && !env_is_1("SATKERN_CPU_NO_AVX512"); }
// The AVX2 build of the row pass when the CPU has AVX2 and FMA, unless SATKERN_CPU_NO_AVX2=1
// (then the portable build runs: tests use it to cover the baseline on any machine).
inline bool use_avx2_rows() { return avx2_rows_built() && cpu_has_avx2() && !env_is_1("SATKERN_CPU_NO_AVX2"); }

template <typename T>
RowFn<T> pick_row_fn(bool ent, bool dist) {
#if SATKERN_HAVE_AVX512_ROW
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx512_rows()) {
      if (ent && dist) return &softmax_row_avx512<true, true>;
      if (ent) return &softmax_row_avx512<true, false>;
      if (dist) return &softmax_row_avx512<false, true>;
      return &softmax_row_avx512<false, false>;
    }
  }
#endif
  if (use_avx2_rows()) return avx2::row_fn<T>(ent, dist);
  return generic::row_fn<T>(ent, dist);
}

struct Params {
  int64_t B, H, T, D, Dv, L;
  double scale;
  int64_t span;  // < 0: no span
  bool renorm;
  bool want_entropy, want_distance, want_colmass, want_maxweight, want_label;
};

template <typename T>
void run_kernel(const Params& P, const T* q, const T* k, const T* v, const int64_t* lengths,
                const T* bias, const int64_t* bstr /* b, h, i, j */, const bool* head_mask,
                const T* lw, T* out, T* lse, T* ent, T* dist, T* col, T* mw, T* lm) {
  const int64_t B = P.B, H = P.H, T_ = P.T, D = P.D, Dv = P.Dv, L = P.L;
  if (B == 0 || H == 0 || T_ == 0) return;
  const bool has_span = P.span >= 0;
  const int64_t r = has_span ? std::min<int64_t>(P.span, T_) : T_;
  const bool band_keys = has_span && P.renorm;   // renorm: only band keys are admissible
  const bool zero_span = has_span && !P.renorm;  // zero: band applied to the output only
  const int nthreads = std::max(1, at::get_num_threads());

  // Query block size: up to 256 rows (bigger blocks make the two GEMMs more efficient), halved while the BQ x window score buffer would
  // exceed 1 MB (a 64 x 4096 float block), or while there would be too few tasks to keep every
  // thread busy; in renorm mode about the span (a block's key window is BQ + 2r keys for
  // 2r + 1 admissible ones per row).
  int64_t BQ = 256;
  if (band_keys) BQ = std::max<int64_t>(16, std::min<int64_t>(64, r));
  auto window_max = [&](int64_t bq) { return band_keys ? std::min(T_, bq + 2 * r) : T_; };
  auto n_tasks = [&](int64_t bq) { return B * H * ((T_ + bq - 1) / bq); };
  while (BQ > 16 && (BQ * window_max(BQ) * (int64_t)sizeof(T) > (int64_t(1) << 20) ||
                     n_tasks(BQ) < 4 * nthreads))
    BQ /= 2;
  if (const char* env = std::getenv("SATKERN_CPU_BLOCK_ROWS")) {  // tuning knob for benchmarks
    const long bq = std::strtol(env, nullptr, 10);
    if (bq > 0) BQ = std::min<int64_t>(bq, 512);  // capped: the buffer stays BQ x window, never T x T
  }
  const int64_t nblk = (T_ + BQ - 1) / BQ;
  const int64_t ntasks = B * H * nblk;
  const int64_t ldS = window_max(BQ);

  // colmass partials are kept in double (a column sums up to T rows; each block's column sums are
  // formed in T by the BLAS, then added in double), which keeps float32 colmass as accurate as
  // torch's own reductions.
  using CT = double;
  // The part of a head's column sums that one task range computed, for a head the range does not
  // cover whole (at most two per range: its first and its last head).
  struct ColPart {
    int64_t range_begin;  // first task of the range: orders the parts of one head
    int64_t bh;
    std::vector<CT> sums;  // [T]
  };
  std::vector<ColPart> col_parts;
  std::mutex col_parts_mutex;
  const RowFn<T> row_fn = pick_row_fn<T>(P.want_entropy, P.want_distance);
  constexpr T nan = std::numeric_limits<T>::quiet_NaN();

  // Outputs are allocated uninitialized; every task writes all of its rows (valid rows computed,
  // padded rows 0, masked heads NaN / 0), so no serial zero-fill precedes the parallel region.
  auto fill_rows = [&](int64_t rowbase, int64_t r0, int64_t r1, T stat) {
    if (r0 >= r1) return;
    std::fill(out + (rowbase + r0) * Dv, out + (rowbase + r1) * Dv, T(0));
    std::fill(lse + rowbase + r0, lse + rowbase + r1, stat);
    if (P.want_entropy) std::fill(ent + rowbase + r0, ent + rowbase + r1, stat);
    if (P.want_distance) std::fill(dist + rowbase + r0, dist + rowbase + r1, stat);
    if (P.want_maxweight) std::fill(mw + rowbase + r0, mw + rowbase + r1, stat);
    if (P.want_label) std::fill(lm + (rowbase + r0) * L, lm + (rowbase + r1) * L, stat);
  };
  // a head's final colmass from its column sums (NaN for a masked head: no work was done)
  auto write_col = [&](int64_t bh, const CT* sums) {
    T* dst = col + bh * T_;
    if (head_mask != nullptr && !head_mask[bh]) {
      std::fill(dst, dst + T_, nan);
      return;
    }
    for (int64_t j = 0; j < T_; ++j) dst[j] = static_cast<T>(sums[j]);
  };

  at::parallel_for(0, ntasks, 1, [&](int64_t begin, int64_t end) {
    // 64-byte aligned buffers (BLAS results must not depend on the allocation's alignment)
    Tensor sbuf_t = at::empty({BQ * ldS + BQ + ldS}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
    T* const sbuf = sbuf_t.data_ptr<T>();
    T* const factor = sbuf + BQ * ldS;
    T* const colblk = factor + BQ;  // one block's column sums
    // column sums of the head being worked on ([T] doubles: this range's only colmass memory)
    std::vector<CT> headcol(P.want_colmass ? static_cast<size_t>(T_) : 0);
    CT* const mycol = P.want_colmass ? headcol.data() : nullptr;
    int64_t cur_bh = -1, cur_first_blk = 0, cur_last_blk = -1;
    auto finish_head = [&]() {  // the range is done with head cur_bh
      if (mycol == nullptr || cur_bh < 0) return;
      if (cur_first_blk == 0 && cur_last_blk == nblk - 1) {
        write_col(cur_bh, mycol);  // the whole head was here
      } else {
        std::lock_guard<std::mutex> guard(col_parts_mutex);
        col_parts.push_back(ColPart{begin, cur_bh, headcol});
      }
    };
    for (int64_t task = begin; task < end; ++task) {
      const int64_t blk = task % nblk;
      const int64_t bh = task / nblk;
      if (mycol != nullptr) {
        if (bh != cur_bh) {
          finish_head();
          std::fill(headcol.begin(), headcol.end(), CT(0));
          cur_bh = bh;
          cur_first_blk = blk;
        }
        cur_last_blk = blk;
      }
      const int64_t b = bh / H, h = bh % H;
      const int64_t i0 = blk * BQ;
      const int64_t i1_all = std::min(T_, i0 + BQ);
      const int64_t rowbase = bh * T_;
      if (head_mask != nullptr && !head_mask[b * H + h]) {  // masked head: NaN stats, no work
        fill_rows(rowbase, i0, i1_all, nan);
        continue;
      }
      const int64_t len = lengths[b];
      const int64_t i1 = std::min(i1_all, len);
      fill_rows(rowbase, std::max(i0, i1), i1_all, T(0));  // padded rows
      if (i0 >= i1) continue;
      const int64_t nq = i1 - i0;
      // key window of this block
      const int64_t kw0 = band_keys ? std::max<int64_t>(0, i0 - r) : 0;
      const int64_t kw1 = band_keys ? std::min<int64_t>(len, i1 - 1 + r + 1) : len;
      const int64_t w = kw1 - kw0;
      const T* qb = q + (rowbase + i0) * D;
      const T* kb = k + (rowbase + kw0) * D;
      const T* vb = v + rowbase * Dv;
      T* S = sbuf;

      rm_gemm<T>(true, nq, w, D, static_cast<T>(P.scale), qb, D, kb, D, S, ldS);
      if (mycol != nullptr) std::fill(colblk, colblk + w, T(0));

      for (int64_t ii = 0; ii < nq; ++ii) {
        const int64_t i = i0 + ii;
        int64_t a = 0, e = w;
        if (band_keys) {
          a = std::max<int64_t>(0, i - r) - kw0;
          e = std::min<int64_t>(len, i + r + 1) - kw0;
        }
        const T* brow = nullptr;
        if (bias != nullptr) brow = bias + b * bstr[0] + h * bstr[1] + i * bstr[2] + kw0 * bstr[3];
        RowStats<T> st = row_fn(S + ii * ldS, w, a, e, kw0, i, brow, bstr[3], mycol != nullptr ? colblk : nullptr);
        factor[ii] = st.factor;
        lse[rowbase + i] = st.lse;
        if (P.want_entropy) ent[rowbase + i] = st.entropy;
        if (P.want_distance) dist[rowbase + i] = st.distance;
        if (P.want_maxweight) mw[rowbase + i] = st.maxweight;
      }

      if (mycol != nullptr) {  // the rows added their shares to colblk (see the row pass)
        CT* c = mycol + kw0;
        for (int64_t j = 0; j < w; ++j) c[j] += static_cast<CT>(colblk[j]);
      }
      if (P.want_label && L > 0) {
        T* lmb = lm + (rowbase + i0) * L;
        rm_gemm<T>(false, nq, L, w, T(1), S, ldS, lw + (b * T_ + kw0) * L, L, lmb, L);
        scale_rows<T>(nq, L, factor, lmb, L);
      }

      int64_t pw0 = kw0, pw1 = kw1;  // key window of the output product
      if (zero_span) {
        pw0 = std::max<int64_t>(0, i0 - r);
        pw1 = std::min<int64_t>(len, i1 - 1 + r + 1);
        for (int64_t ii = 0; ii < nq; ++ii) {
          const int64_t i = i0 + ii;
          T* srow = S + ii * ldS;  // window coordinates = key index (kw0 = 0)
          const int64_t lo = std::min(std::max(pw0, i - r), pw1);
          const int64_t hi = std::max(std::min(pw1, i + r + 1), lo);
          std::fill(srow + pw0, srow + lo, T(0));
          std::fill(srow + hi, srow + pw1, T(0));
        }
      }
      T* ob = out + (rowbase + i0) * Dv;
      rm_gemm<T>(false, nq, Dv, pw1 - pw0, T(1), S + (pw0 - kw0), ldS, vb + pw0 * Dv, Dv, ob, Dv);
      scale_rows<T>(nq, Dv, factor, ob, Dv);
    }
    finish_head();
  });

  if (P.want_colmass && !col_parts.empty()) {
    // Heads cut by range boundaries: add their parts in range order (deterministic for a fixed
    // thread count: the ranges are). At most two parts per range, so this is O(nthreads * T).
    std::sort(col_parts.begin(), col_parts.end(), [](const ColPart& a, const ColPart& b) {
      return a.bh != b.bh ? a.bh < b.bh : a.range_begin < b.range_begin;
    });
    std::vector<CT> acc(static_cast<size_t>(T_));
    for (size_t i = 0; i < col_parts.size();) {
      const int64_t bh = col_parts[i].bh;
      std::fill(acc.begin(), acc.end(), CT(0));
      for (; i < col_parts.size() && col_parts[i].bh == bh; ++i)
        for (int64_t j = 0; j < T_; ++j) acc[j] += col_parts[i].sums[j];
      write_col(bh, acc.data());
    }
  }
}

// ---------------------------------------------------------------------------------------------
std::string describe(const Tensor& t) {
  std::ostringstream os;
  os << "shape " << t.sizes() << ", dtype " << t.scalar_type() << ", device " << t.device();
  return os.str();
}

bool is_float(at::ScalarType s) {
  return s == at::kFloat || s == at::kDouble || s == at::kBFloat16 || s == at::kHalf;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> fused_attention_cpu(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lengths,
    const std::optional<Tensor>& bias, const std::optional<Tensor>& head_mask,
    const std::optional<Tensor>& label_weights, double scale, int64_t span, bool renorm,
    bool want_entropy, bool want_distance, bool want_colmass, bool want_maxweight) {
  // ---- argument checks (satkern.attention validates in Python too; the op can be called directly)
  TORCH_CHECK(q.dim() == 4, kOp, "argument 'q' must be a 4-d tensor [B, H, T, D]; got ", describe(q));
  TORCH_CHECK(is_float(q.scalar_type()), kOp,
              "argument 'q' must be float16, bfloat16, float32 or float64; got ", describe(q));
  TORCH_CHECK(q.device().is_cpu(), kOp, "argument 'q' must be a CPU tensor; got ", describe(q));
  TORCH_CHECK(k.sizes() == q.sizes(), kOp, "argument 'k' must have the shape of q ", q.sizes(),
              "; got ", describe(k));
  TORCH_CHECK(v.dim() == 4 && v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2),
              kOp, "argument 'v' must be [B, H, T, Dv] with [B, H, T] of q ", q.sizes(), "; got ",
              describe(v));
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"k", &k}, {"v", &v}}) {
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), kOp, "argument '", name, "' must have q's dtype ",
                q.scalar_type(), "; got ", describe(*t));
    TORCH_CHECK(t->device().is_cpu(), kOp, "argument '", name, "' must be a CPU tensor; got ", describe(*t));
  }
  const int64_t B = q.size(0), H = q.size(1), T_ = q.size(2), D = q.size(3), Dv = v.size(3);
  TORCH_CHECK(D >= 1, kOp, "argument 'q' must have head dim D >= 1; got ", describe(q));
  TORCH_CHECK(std::isfinite(scale), kOp, "argument 'scale' must be finite; got ", scale);
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == B, kOp, "argument 'lengths' must be [B] = [", B,
              "]; got ", describe(lengths));
  TORCH_CHECK(at::isIntegralType(lengths.scalar_type(), /*includeBool=*/false), kOp,
              "argument 'lengths' must be an integer tensor; got ", describe(lengths));
  TORCH_CHECK(lengths.device().is_cpu(), kOp, "argument 'lengths' must be a CPU tensor; got ",
              describe(lengths));
  Tensor len64 = lengths.to(at::kLong).contiguous();
  const int64_t* lp = len64.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(lp[b] >= 0 && lp[b] <= T_, kOp, "argument 'lengths' must hold values in [0, T=", T_,
                "]; got ", lp[b], " at index ", b);

  const at::ScalarType acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;

  Tensor bias_c;
  int64_t bstr[4] = {0, 0, 0, 0};
  if (bias.has_value() && bias->defined()) {
    const Tensor& bs = *bias;
    TORCH_CHECK(is_float(bs.scalar_type()), kOp, "argument 'bias' must be a floating-point tensor; got ",
                describe(bs));
    TORCH_CHECK(bs.device().is_cpu(), kOp, "argument 'bias' must be a CPU tensor; got ", describe(bs));
    TORCH_CHECK(bs.dim() <= 4 && at::is_expandable_to(bs.sizes(), {B, H, T_, T_}), kOp,
                "argument 'bias' must be broadcastable to [B, H, T, T] = [", B, ", ", H, ", ", T_, ", ", T_,
                "]; got ", describe(bs));
    bias_c = cpu::compact_bias(bs, B, H, T_, acc, bstr);  // read through its strides (cpu/bias.h)
  }
  Tensor mask_c;
  if (head_mask.has_value() && head_mask->defined()) {
    const Tensor& hm = *head_mask;
    TORCH_CHECK(hm.scalar_type() == at::kBool, kOp, "argument 'head_mask' must be a bool tensor [B, H]; got ",
                describe(hm));
    TORCH_CHECK(hm.dim() == 2 && hm.size(0) == B && hm.size(1) == H, kOp,
                "argument 'head_mask' must be [B, H] = [", B, ", ", H, "]; got ", describe(hm));
    TORCH_CHECK(hm.device().is_cpu(), kOp, "argument 'head_mask' must be a CPU tensor; got ", describe(hm));
    mask_c = hm.contiguous();
  }
  Tensor lw_c;
  int64_t L = 0;
  const bool want_label = label_weights.has_value() && label_weights->defined();
  if (want_label) {
    const Tensor& lw = *label_weights;
    TORCH_CHECK(is_float(lw.scalar_type()), kOp,
                "argument 'label_weights' must be a floating-point tensor [B, T, L]; got ", describe(lw));
    TORCH_CHECK(lw.dim() == 3 && lw.size(0) == B && lw.size(1) == T_, kOp,
                "argument 'label_weights' must be [B, T, L] = [", B, ", ", T_, ", L]; got ", describe(lw));
    TORCH_CHECK(lw.device().is_cpu(), kOp, "argument 'label_weights' must be a CPU tensor; got ",
                describe(lw));
    lw_c = lw.to(acc).contiguous();
    L = lw.size(2);
  }

  // ---- compute-type contiguous copies (no copy for contiguous float32/float64 inputs)
  Tensor qc = q.to(acc).contiguous(), kc = k.to(acc).contiguous(), vc = v.to(acc).contiguous();
  auto so = q.options().dtype(acc);
  // uninitialized: the kernel writes every element (see run_kernel)
  Tensor out_acc = at::empty({B, H, T_, Dv}, so);
  Tensor lse = at::empty({B, H, T_}, so);
  Tensor none = at::empty({0}, so);
  Tensor ent = want_entropy ? at::empty({B, H, T_}, so) : none.clone();
  Tensor dist = want_distance ? at::empty({B, H, T_}, so) : none.clone();
  Tensor col = want_colmass ? at::empty({B, H, T_}, so) : none.clone();
  Tensor mw = want_maxweight ? at::empty({B, H, T_}, so) : none.clone();
  Tensor lm = want_label ? at::empty({B, H, T_, L}, so) : none.clone();

  Params P{B, H, T_, D, Dv, L, scale, span, renorm, want_entropy, want_distance, want_colmass,
           want_maxweight, want_label};
  AT_DISPATCH_FLOATING_TYPES(acc, "satkern_fused_attention_cpu", [&] {
    run_kernel<scalar_t>(
        P, qc.data_ptr<scalar_t>(), kc.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(), lp,
        bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr, bstr,
        mask_c.defined() ? mask_c.data_ptr<bool>() : nullptr,
        want_label ? lw_c.data_ptr<scalar_t>() : nullptr, out_acc.data_ptr<scalar_t>(),
        lse.data_ptr<scalar_t>(), want_entropy ? ent.data_ptr<scalar_t>() : nullptr,
        want_distance ? dist.data_ptr<scalar_t>() : nullptr,
        want_colmass ? col.data_ptr<scalar_t>() : nullptr,
        want_maxweight ? mw.data_ptr<scalar_t>() : nullptr,
        want_label ? lm.data_ptr<scalar_t>() : nullptr);
  });
  Tensor out = out_acc.scalar_type() == q.scalar_type() ? out_acc : out_acc.to(q.scalar_type());
  return {out, lse, ent, dist, col, mw, lm};
}

}  // namespace
}  // namespace satkern

TORCH_LIBRARY_IMPL(satkern, CPU, m) {
  m.impl("fused_attention", &satkern::fused_attention_cpu);
}

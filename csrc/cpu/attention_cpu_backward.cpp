// CPU implementation of satkern::fused_attention_backward (schema in satkern/ops/schema.py; the
// autograd formula that calls it is satkern/ops/autograd.py).
//
// Gradients of the forward's out (and lse, entropy, distance, colmass) with respect to q, k, v and
// bias. The probabilities are recomputed from the saved lse over the same keys as the forward (all
// valid keys, or the band in renorm mode), never T x T. Per (block of query rows, range of keys):
//   S   = scale Q_blk K_rng^T (+ bias),  P = exp(S - lse)          BLAS gemm
//   dP  = dO_blk V_rng^T (zeroed off the band in zero-span mode)    BLAS gemm
//   per row i, with Delta_i = dO_i . out_i (FlashAttention's rowsum(dO o O)):
//     dS_ij = P_ij * ( dP_ij - Delta_i                               out
//                    + g_lse_i                                       lse
//                    - g_ent_i (log P_ij + H_i)                       entropy: dH/ds_j = -p_j (log p_j + H)
//                    + g_dist_i (|i - j| - dist_i)                    distance: d dist/ds_j = p_j (|i-j| - dist)
//                    + g_col_j - r_i )                                colmass, r_i = sum_k P_ik g_col_k
//   dV_rng += P'^T dO_blk   (P' = P zeroed off the band in zero-span mode)   BLAS gemm
//   dK_rng += scale dS^T Q_blk,  dQ_blk += scale dS K_rng,  dBias = dS       BLAS gemm
// Every term of dS but r_i needs only per-row scalars (lse, Delta, H, dist and the row gradients;
// a per-head pre-pass folds them into one constant c_i), so the key axis can be cut into tiles.
//
// Two schedules (the row pass, grad_row.inc.h, is the same in both; its AVX2 build is used when the
// CPU has AVX2+FMA unless SATKERN_CPU_NO_AVX2=1):
//   * tiled (no colmass gradient): FlashAttention-2's order. The outer loop runs over key tiles of
//     BK keys, whose K, V, dK, dV tiles stay in cache; the inner loop over query blocks of BQ rows,
//     with dQ_blk accumulated across key tiles. The S / dS tiles (BQ x BK), the four key tiles and
//     a query block's Q, dO, dQ fit L2 (float32: BQ = 256, BK = 128, 576 KB; float64: BQ = 128), so
//     a query block's GEMMs never stream the whole K, V, dK, dV from L3 as a whole-row block does
//     (measured on a quiet 2-core Zen 5, T = 1024 and 4096: 256 x 128 at or near the best of
//     64..256 x 128..512; within noise of each other). In renorm mode a key tile visits only
//     the query rows whose band reaches it; in zero-span mode the dP and dV products of a pair
//     that lies wholly off the band are skipped (P' and dP are 0 there).
//   * whole rows (a colmass gradient): r_i needs each row's whole P, so per block of BQ query rows
//     S and dP are formed over the block's whole key window (the old schedule); r_i comes from the
//     row buffer, no pre-pass. SATKERN_CPU_BWD_SCHEDULE=tiled runs a colmass gradient tiled
//     too, with a pre-pass that recomputes S tile by tile for r_i (a sixth GEMM): measured 7-12%
//     slower than whole rows at T = 1024 and 4096, so whole rows stay the default there.
// SATKERN_CPU_BWD_SCHEDULE=tiled / rows forces a schedule and SATKERN_CPU_BWD_TILE="BQ,BK" the tile
// sizes (tuning and tests only).
//
// Parallel work: a task is one (group of heads, chunk). A group is one (b, h) head, or, when the
// bias gradient is asked for and the bias is broadcast over the batch and/or the heads, every head
// that shares one slice of the bias: the task loops over them in order, so a broadcast bias
// gradient is summed without races. Chunks split a head when there are fewer groups than threads:
// tiled, a chunk is a range of key tiles (it owns their dK/dV rows; its dQ goes to its own buffer);
// whole rows, a range of query blocks (dQ rows owned; dK/dV to its own buffer). The chunk buffers
// are summed in chunk order at the end. A bias gradient summed over the axis that chunks split
// (keys when tiled, query rows otherwise) keeps one chunk per group. Tile sizes never depend on
// the thread count, and every sum is in a fixed order for a fixed thread count: bitwise
// deterministic.
//
// Padded query rows, padded keys, empty rows (lse = -inf) and masked heads (head_mask false) get and
// give no gradient; masked heads are skipped (no work). Extra memory: per thread two BQ x BK (tiled)
// or BQ x window buffers and O(T) row constants; the chunk buffers are O(B H T D).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "cpu/bias.h"
#include "cpu/blas.h"
#include "cpu/grad_row_kernels.h"
#include "cpu/row_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace satkern {
namespace {

using at::Tensor;
using at::vec::Vectorized;

constexpr const char* kOp = "satkern::fused_attention_backward (cpu): ";

using blas::gemm;

#include "cpu/vec_math.inc.h"

template <typename T>
T dot(const T* x, const T* y, int64_t n) {
  using Vec = Vectorized<T>;
  Vec acc(T(0));
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) acc = at::vec::fmadd(Vec::loadu(x + j), Vec::loadu(y + j), acc);
  T s = hsum(acc);
  for (; j < n; ++j) s += x[j] * y[j];
  return s;
}

// The admissible keys [a, e) of query row i inside the key tile [j0, j0 + w) (tile coordinates)
// when only keys with |i - j| <= r are (renorm span); an empty range where the band misses the tile.
inline void band_in_tile(int64_t i, int64_t r, int64_t j0, int64_t w, int64_t& a, int64_t& e) {
  a = std::min(std::max<int64_t>(0, i - r - j0), w);
  e = std::max(std::min<int64_t>(w, i + r + 1 - j0), a);
}

inline bool env_is_1(const char* name) {
  const char* env = std::getenv(name);
  return env != nullptr && env[0] == '1';
}

// The AVX2 build of the row pass when it was built and the CPU runs it, unless SATKERN_CPU_NO_AVX2=1.
inline bool use_avx2_grad_rows() {
  return avx2_rows_built() && cpu_has_avx2() && !env_is_1("SATKERN_CPU_NO_AVX2");
}

template <typename T>
GradRowFn<T> pick_grad_row(bool out, bool ent, bool dist, bool col) {
  if (use_avx2_grad_rows()) return grad_avx2::grad_row_fn<T>(out, ent, dist, col);
  return grad_generic::grad_row_fn<T>(out, ent, dist, col);
}

template <typename T>
ColRowsumFn<T> pick_colmass_rowsum() {
  if (use_avx2_grad_rows()) return grad_avx2::colmass_rowsum_fn<T>();
  return grad_generic::colmass_rowsum_fn<T>();
}

struct BwdParams {
  int64_t B, H, T, D, Dv;
  double scale;
  int64_t span;  // < 0: no span
  bool renorm;
  bool g_out, g_lse, g_ent, g_dist, g_col;
  bool want_dbias;
  int64_t bias_size[4];  // sizes of the bias gradient (1 = summed over that dim)
};

// One row of a (query block, key range) pair. On entry srow[0, w) = scale q_i . k_(kw0 + j) and, with
// an out gradient, drow[0, w) = dP; [a, e) are the row's admissible keys; `empty`: no distribution
// (lse = -inf, or no admissible key). On return srow = P' (P, zeroed off the band in zero-span mode)
// and drow = dS on [0, w), 0 outside [a, e).
template <typename T>
inline void finish_row(T* srow, T* drow, int64_t w, int64_t a, int64_t e, int64_t kw0, int64_t i, bool empty,
                       bool zero_span, int64_t r, bool g_out, const T* brow, int64_t bsj, const T* gc,
                       const RowGrad<T>& g, GradRowFn<T> row_fn) {
  if (empty || a >= e) {
    std::fill(srow, srow + w, T(0));
    std::fill(drow, drow + w, T(0));
    return;
  }
  // the band |i - j| <= r in range coordinates: [lo, hi)
  const int64_t lo = zero_span ? std::min(std::max<int64_t>(0, i - r - kw0), w) : 0;
  const int64_t hi = zero_span ? std::max(std::min<int64_t>(w, i + r + 1 - kw0), lo) : w;
  if (zero_span && g_out) {  // out uses P zeroed off the band: so does dP
    std::fill(drow, drow + lo, T(0));
    std::fill(drow + hi, drow + w, T(0));
  }
  row_fn(srow, drow, a, e, kw0, i, brow, bsj, gc, g);
  std::fill(srow, srow + a, T(0));
  std::fill(srow + e, srow + w, T(0));
  std::fill(drow, drow + a, T(0));
  std::fill(drow + e, drow + w, T(0));
  if (zero_span) {  // dV uses P' = P zeroed off the band
    std::fill(srow, srow + lo, T(0));
    std::fill(srow + hi, srow + w, T(0));
  }
}

// dS of rows [i0, i0 + nq) x keys [kw0, kw0 + w) into the bias gradient slice dbh, summed over the
// dimensions the bias broadcasts (bsz[2] == 1: over rows; bsz[3] == 1: over keys).
template <typename T>
void add_dbias(T* dbh, const int64_t* bsz, const T* dS, int64_t ldS, int64_t nq, int64_t w, int64_t i0, int64_t kw0,
               T* colsum) {
  if (bsz[3] == 1) {  // summed over keys
    for (int64_t ii = 0; ii < nq; ++ii) {
      T acc = 0;
      for (int64_t j = 0; j < w; ++j) acc += dS[ii * ldS + j];
      dbh[(bsz[2] == 1 ? 0 : i0 + ii)] += acc;
    }
  } else if (bsz[2] == 1) {  // summed over query rows
    std::fill(colsum, colsum + w, T(0));
    for (int64_t ii = 0; ii < nq; ++ii)
      for (int64_t j = 0; j < w; ++j) colsum[j] += dS[ii * ldS + j];
    for (int64_t j = 0; j < w; ++j) dbh[kw0 + j] += colsum[j];
  } else {
    for (int64_t ii = 0; ii < nq; ++ii) {
      T* dst = dbh + (i0 + ii) * bsz[3] + kw0;
      const T* src = dS + ii * ldS;
      for (int64_t j = 0; j < w; ++j) dst[j] += src[j];
    }
  }
}

// The schedule: tiled unless a colmass gradient flows; SATKERN_CPU_BWD_SCHEDULE=tiled / rows forces
// one (tuning and tests only).
bool use_tiles(bool g_col) {
  const char* env = std::getenv("SATKERN_CPU_BWD_SCHEDULE");
  if (env != nullptr && std::string(env) == "tiled") return true;
  if (env != nullptr && std::string(env) == "rows") return false;
  return !g_col;
}

// SATKERN_CPU_BWD_TILE="BQ,BK": tile sizes of the tiled schedule (tuning and tests); false if unset.
bool tile_override(int64_t& bq, int64_t& bk) {
  const char* env = std::getenv("SATKERN_CPU_BWD_TILE");
  if (env == nullptr) return false;
  char* rest = nullptr;
  const long a = std::strtol(env, &rest, 10);
  if (rest == nullptr || *rest != ',') return false;
  const long b = std::strtol(rest + 1, nullptr, 10);
  if (a <= 0 || b <= 0) return false;
  bq = std::min<int64_t>(a, 1024);  // capped: the buffers stay BQ x BK, never T x T
  bk = std::min<int64_t>(b, 4096);
  return true;
}

template <typename T>
void run_backward(const BwdParams& P, const T* q, const T* k, const T* v, const T* out, const T* lse,
                  const T* ent, const T* dist, const T* gout, const T* glse, const T* gent, const T* gdist,
                  const T* gcol, const int64_t* lengths, const T* bias, const int64_t* bstr,
                  const bool* head_mask, T* dq, T* dk, T* dv, T* dbias) {
  const int64_t B = P.B, H = P.H, T_ = P.T, D = P.D, Dv = P.Dv;
  if (B == 0 || H == 0 || T_ == 0) return;
  const bool has_span = P.span >= 0;
  const int64_t r = has_span ? std::min<int64_t>(P.span, T_) : T_;
  const bool band_keys = has_span && P.renorm;
  const bool zero_span = has_span && !P.renorm;
  const int nthreads = std::max(1, at::get_num_threads());
  const T scale = static_cast<T>(P.scale);
  const bool tiled = use_tiles(P.g_col);
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);

  // Block sizes, independent of the thread count.
  //   tiled: BQ query rows x BK keys (renorm: about the span, so that a tile's rows stay near the band).
  //   whole rows: BQ = 64 (as the forward), halved while the two BQ x window buffers would exceed
  //   2 MB; in renorm mode about the span.
  int64_t BQ = 64, BK = 128;
  auto window_max = [&](int64_t bq) { return band_keys ? std::min(T_, bq + 2 * r) : T_; };
  if (tiled) {
    BQ = sizeof(T) == 4 ? 256 : 128;  // float32: S and dS 2 x 128 KB, K/V/dK/dV tiles 128 KB, Q/dO/dQ blocks 192 KB
    if (band_keys) {
      BQ = std::max<int64_t>(16, std::min<int64_t>(64, r));
      BK = std::max<int64_t>(32, std::min<int64_t>(128, r));
    }
    tile_override(BQ, BK);
    BK = std::min(BK, T_);
  } else {
    if (band_keys) BQ = std::max<int64_t>(16, std::min<int64_t>(64, r));
    while (BQ > 16 && 2 * BQ * window_max(BQ) * (int64_t)sizeof(T) > (int64_t(1) << 21)) BQ /= 2;
  }
  const int64_t nblk = (T_ + BQ - 1) / BQ;  // query blocks (whole rows)
  const int64_t ntile = (T_ + BK - 1) / BK;  // key tiles (tiled)
  const int64_t ldS = tiled ? BK : window_max(BQ);

  // groups of heads that share one slice of the bias gradient (see the header)
  const int64_t* bsz = P.bias_size;
  const bool share_b = P.want_dbias && bsz[0] == 1 && B > 1;
  const bool share_h = P.want_dbias && bsz[1] == 1 && H > 1;
  const int64_t GB = share_b ? 1 : B, GH = share_h ? 1 : H;
  const int64_t ngroups = GB * GH;
  // a bias gradient summed over the axis chunks would split: one chunk
  const bool one_chunk = P.want_dbias && (tiled ? bsz[3] == 1 : bsz[2] == 1);
  const int64_t nunits = tiled ? ntile : nblk;
  int64_t nchunks = 1;
  if (!one_chunk && ngroups < nthreads) nchunks = std::min<int64_t>(nunits, (nthreads + ngroups - 1) / ngroups);
  const int64_t units_per_chunk = (nunits + nchunks - 1) / nchunks;
  const int64_t BHT = B * H * T_;
  // per-chunk partials (only when a head is split): dQ when tiled, dK and dV for whole rows
  const int64_t part_stride = BHT * (tiled ? D : D + Dv);
  Tensor part_t;
  if (nchunks > 1) part_t = at::zeros({nchunks * part_stride}, opts);
  T* const part = nchunks > 1 ? part_t.data_ptr<T>() : nullptr;
  // dq, dk, dv arrive uninitialized: zeroed here, or, when one task owns each head whole (tiled, one
  // chunk), by that task right before it works on the head (in parallel, and the rows stay in cache)
  const bool zero_in_task = tiled && nchunks == 1;
  if (!zero_in_task) {
    std::fill(dq, dq + BHT * D, T(0));
    std::fill(dk, dk + BHT * D, T(0));
    std::fill(dv, dv + BHT * Dv, T(0));
  }

  const GradRowFn<T> row_fn = pick_grad_row<T>(P.g_out, P.g_ent, P.g_dist, P.g_col);
  const ColRowsumFn<T> col_rowsum = P.g_col ? pick_colmass_rowsum<T>() : nullptr;
  constexpr T ninf = -std::numeric_limits<T>::infinity();

  at::parallel_for(0, ngroups * nchunks, 1, [&](int64_t begin, int64_t end) {
    Tensor buf_t = at::empty({2 * BQ * ldS + ldS + 2 * T_}, opts);
    T* const S = buf_t.data_ptr<T>();
    T* const dS = S + BQ * ldS;
    T* const colsum = dS + BQ * ldS;  // dbias summed over rows, per block
    T* const crow = colsum + ldS;     // the head's row constants c_i
    T* const rrow = crow + T_;        // the head's r_i (tiled, colmass gradient)
    for (int64_t task = begin; task < end; ++task) {
      const int64_t chunk = task % nchunks;
      const int64_t grp = task / nchunks;
      const int64_t gb = grp / GH, gh = grp % GH;
      const int64_t u0 = chunk * units_per_chunk, u1 = std::min(nunits, u0 + units_per_chunk);
      for (int64_t b = share_b ? 0 : gb; b < (share_b ? B : gb + 1); ++b) {
        for (int64_t h = share_h ? 0 : gh; h < (share_h ? H : gh + 1); ++h) {
          const int64_t bh = b * H + h;
          if (zero_in_task) {
            std::fill(dq + bh * T_ * D, dq + (bh + 1) * T_ * D, T(0));
            std::fill(dk + bh * T_ * D, dk + (bh + 1) * T_ * D, T(0));
            std::fill(dv + bh * T_ * Dv, dv + (bh + 1) * T_ * Dv, T(0));
          }
          if (head_mask != nullptr && !head_mask[bh]) continue;  // masked head: no work
          const int64_t rowbase = bh * T_;
          const int64_t len = lengths[b];
          if (len == 0 || u0 >= u1) continue;
          T* const chunk_part = nchunks > 1 ? part + chunk * part_stride : nullptr;
          T* dqh = dq + rowbase * D;
          T* dkh = dk + rowbase * D;
          T* dvh = dv + rowbase * Dv;
          if (nchunks > 1) {
            if (tiled) dqh = chunk_part + rowbase * D;
            else {
              dkh = chunk_part + rowbase * D;
              dvh = chunk_part + BHT * D + rowbase * Dv;
            }
          }
          T* dbh = nullptr;
          if (P.want_dbias)
            dbh = dbias + ((bsz[0] == 1 ? 0 : b) * bsz[1] + (bsz[1] == 1 ? 0 : h)) * bsz[2] * bsz[3];
          const T* qh = q + rowbase * D;
          const T* kh = k + rowbase * D;
          const T* vh = v + rowbase * Dv;
          const T* goh = P.g_out ? gout + rowbase * Dv : nullptr;
          const T* lh = lse + rowbase;
          const T* bh_bias = bias != nullptr ? bias + b * bstr[0] + h * bstr[1] : nullptr;

          // the row constants c_i = -Delta_i + g_lse_i - g_ent_i H_i - g_dist_i dist_i (r_i comes later)
          for (int64_t i = 0; i < len; ++i) {
            T c = 0;
            if (P.g_out) c -= dot(goh + i * Dv, out + (rowbase + i) * Dv, Dv);
            if (P.g_lse) c += glse[rowbase + i];
            if (P.g_ent) c -= gent[rowbase + i] * ent[rowbase + i];
            if (P.g_dist) c -= gdist[rowbase + i] * dist[rowbase + i];
            crow[i] = c;
          }
          auto row_grad = [&](int64_t i) {
            return RowGrad<T>{lh[i], crow[i], P.g_ent ? gent[rowbase + i] : T(0),
                              P.g_dist ? gdist[rowbase + i] : T(0)};
          };

          if (tiled) {
            if (P.g_col) {
              // pre-pass: r_i = sum_k P_ik g_col_k over every key tile, in tile order (each chunk
              // computes it for all its rows: a chunk's key tiles reach every row)
              std::fill(rrow, rrow + len, T(0));
              for (int64_t i0 = 0; i0 < len; i0 += BQ) {
                const int64_t i1 = std::min(len, i0 + BQ);
                const int64_t nq = i1 - i0;
                const int64_t klo = band_keys ? std::max<int64_t>(0, i0 - r) : 0;
                const int64_t khi = band_keys ? std::min<int64_t>(len, i1 - 1 + r + 1) : len;
                for (int64_t j0 = klo; j0 < khi; j0 += BK) {
                  const int64_t w = std::min(khi, j0 + BK) - j0;
                  gemm<T>(false, true, nq, w, D, scale, qh + i0 * D, D, kh + j0 * D, D, T(0), S, ldS);
                  for (int64_t ii = 0; ii < nq; ++ii) {
                    const int64_t i = i0 + ii;
                    int64_t a = 0, e = w;
                    if (band_keys) band_in_tile(i, r, j0, w, a, e);
                    if (lh[i] == ninf || a >= e) continue;
                    T* srow = S + ii * ldS;
                    if (bh_bias != nullptr) {
                      const T* brow = bh_bias + i * bstr[2] + j0 * bstr[3];
                      for (int64_t j = a; j < e; ++j) srow[j] += brow[j * bstr[3]];
                    }
                    rrow[i] += col_rowsum(srow, a, e, lh[i], gcol + rowbase + j0);
                  }
                }
              }
              for (int64_t i = 0; i < len; ++i) crow[i] -= rrow[i];
            }
            for (int64_t kt = u0; kt < u1; ++kt) {
              const int64_t j0 = kt * BK;
              const int64_t j1 = std::min(len, j0 + BK);
              if (j0 >= j1) break;
              const int64_t w = j1 - j0;
              const T* kb = kh + j0 * D;
              const T* vb = vh + j0 * Dv;
              // the query rows whose keys reach this tile
              const int64_t qlo = band_keys ? std::max<int64_t>(0, j0 - r) : 0;
              const int64_t qhi = band_keys ? std::min<int64_t>(len, j1 - 1 + r + 1) : len;
              for (int64_t i0 = qlo; i0 < qhi; i0 += BQ) {
                const int64_t i1 = std::min(qhi, i0 + BQ);
                const int64_t nq = i1 - i0;
                const T* qb = qh + i0 * D;
                const T* gob = P.g_out ? goh + i0 * Dv : nullptr;
                // zero-span: a pair wholly off the band has dP = 0 and P' = 0 (no dP, no dV product)
                const bool on_band = !zero_span || (j0 <= i1 - 1 + r && j1 - 1 >= i0 - r);
                gemm<T>(false, true, nq, w, D, scale, qb, D, kb, D, T(0), S, ldS);
                if (P.g_out && on_band) gemm<T>(false, true, nq, w, Dv, T(1), gob, Dv, vb, Dv, T(0), dS, ldS);
                for (int64_t ii = 0; ii < nq; ++ii) {
                  const int64_t i = i0 + ii;
                  int64_t a = 0, e = w;
                  if (band_keys) band_in_tile(i, r, j0, w, a, e);
                  const T* brow = bh_bias != nullptr ? bh_bias + i * bstr[2] + j0 * bstr[3] : nullptr;
                  finish_row<T>(S + ii * ldS, dS + ii * ldS, w, a, e, j0, i, lh[i] == ninf, zero_span, r,
                                P.g_out, brow, bstr[3], P.g_col ? gcol + rowbase + j0 : nullptr, row_grad(i),
                                row_fn);
                }
                if (P.g_out && on_band) gemm<T>(true, false, w, Dv, nq, T(1), S, ldS, gob, Dv, T(1), dvh + j0 * Dv, Dv);
                gemm<T>(true, false, w, D, nq, scale, dS, ldS, qb, D, T(1), dkh + j0 * D, D);
                gemm<T>(false, false, nq, D, w, scale, dS, ldS, kb, D, T(1), dqh + i0 * D, D);
                if (dbh != nullptr) add_dbias(dbh, bsz, dS, ldS, nq, w, i0, j0, colsum);
              }
            }
            continue;
          }

          // whole rows: blocks [u0, u1) of BQ query rows, each over its whole key window
          for (int64_t blk = u0; blk < u1; ++blk) {
            const int64_t i0 = blk * BQ;
            const int64_t i1 = std::min(std::min(T_, i0 + BQ), len);
            if (i0 >= i1) break;
            const int64_t nq = i1 - i0;
            const int64_t kw0 = band_keys ? std::max<int64_t>(0, i0 - r) : 0;
            const int64_t kw1 = band_keys ? std::min<int64_t>(len, i1 - 1 + r + 1) : len;
            const int64_t w = kw1 - kw0;
            if (w <= 0) continue;
            const T* qb = qh + i0 * D;
            const T* kb = kh + kw0 * D;
            const T* vb = vh + kw0 * Dv;
            const T* gob = P.g_out ? goh + i0 * Dv : nullptr;

            gemm<T>(false, true, nq, w, D, scale, qb, D, kb, D, T(0), S, ldS);
            if (P.g_out) gemm<T>(false, true, nq, w, Dv, T(1), gob, Dv, vb, Dv, T(0), dS, ldS);

            for (int64_t ii = 0; ii < nq; ++ii) {
              const int64_t i = i0 + ii;
              T* srow = S + ii * ldS;
              T* drow = dS + ii * ldS;
              int64_t a = 0, e = w;
              if (band_keys) {
                a = std::max<int64_t>(0, i - r) - kw0;
                e = std::min<int64_t>(len, i + r + 1) - kw0;
              }
              const T l = lh[i];
              const bool empty = l == ninf || a >= e;
              const T* brow = bh_bias != nullptr ? bh_bias + i * bstr[2] + kw0 * bstr[3] : nullptr;
              RowGrad<T> g = row_grad(i);
              const T* gc = P.g_col ? gcol + rowbase + kw0 : nullptr;
              if (P.g_col && !empty) {
                // bias first (grad_row would add it again: pass no bias then)
                if (brow != nullptr) {
                  for (int64_t j = a; j < e; ++j) srow[j] += brow[j * bstr[3]];
                  brow = nullptr;
                }
                g.c -= col_rowsum(srow, a, e, l, gc);
              }
              finish_row<T>(srow, drow, w, a, e, kw0, i, empty, zero_span, r, P.g_out, brow, bstr[3], gc, g,
                            row_fn);
            }

            if (P.g_out) gemm<T>(true, false, w, Dv, nq, T(1), S, ldS, gob, Dv, T(1), dvh + kw0 * Dv, Dv);
            gemm<T>(true, false, w, D, nq, scale, dS, ldS, qb, D, T(1), dkh + kw0 * D, D);
            gemm<T>(false, false, nq, D, w, scale, dS, ldS, kb, D, T(0), dq + (rowbase + i0) * D, D);
            if (dbh != nullptr) add_dbias(dbh, bsz, dS, ldS, nq, w, i0, kw0, colsum);
          }
        }
      }
    }
  });

  if (nchunks > 1) {  // sum the chunks' partials in chunk order
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        for (int64_t c = 0; c < nchunks; ++c) {
          const T* pc = part + c * part_stride;
          if (tiled) {
            const T* pq = pc + bh * T_ * D;
            T* oq = dq + bh * T_ * D;
            for (int64_t x = 0; x < T_ * D; ++x) oq[x] += pq[x];
            continue;
          }
          const T* pk = pc + bh * T_ * D;
          const T* pv = pc + BHT * D + bh * T_ * Dv;
          T* ok = dk + bh * T_ * D;
          T* ov = dv + bh * T_ * Dv;
          for (int64_t x = 0; x < T_ * D; ++x) ok[x] += pk[x];
          for (int64_t x = 0; x < T_ * Dv; ++x) ov[x] += pv[x];
        }
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------
std::string describe(const Tensor& t) {
  std::ostringstream os;
  os << "shape " << t.sizes() << ", dtype " << t.scalar_type() << ", device " << t.device();
  return os.str();
}

bool given(const std::optional<Tensor>& t) { return t.has_value() && t->defined() && t->numel() > 0; }

std::tuple<Tensor, Tensor, Tensor, Tensor> fused_attention_backward_cpu(
    const std::optional<Tensor>& grad_out, const std::optional<Tensor>& grad_lse,
    const std::optional<Tensor>& grad_entropy, const std::optional<Tensor>& grad_distance,
    const std::optional<Tensor>& grad_colmass, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& out, const Tensor& lse, const Tensor& entropy, const Tensor& distance, const Tensor& lengths,
    const std::optional<Tensor>& bias, const std::optional<Tensor>& head_mask, double scale, int64_t span,
    bool renorm, bool want_grad_bias) {
  TORCH_CHECK(q.dim() == 4 && q.device().is_cpu(), kOp, "argument 'q' must be a 4-d CPU tensor; got ", describe(q));
  const int64_t B = q.size(0), H = q.size(1), T_ = q.size(2), D = q.size(3), Dv = v.size(3);
  TORCH_CHECK(k.sizes() == q.sizes(), kOp, "argument 'k' must have q's shape; got ", describe(k));
  TORCH_CHECK(v.dim() == 4 && v.size(0) == B && v.size(1) == H && v.size(2) == T_, kOp,
              "argument 'v' must be [B, H, T, Dv]; got ", describe(v));
  TORCH_CHECK(out.sizes() == v.sizes(), kOp, "argument 'out' must have v's shape; got ", describe(out));
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == B && lse.size(1) == H && lse.size(2) == T_, kOp,
              "argument 'lse' must be [B, H, T]; got ", describe(lse));
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == B, kOp, "argument 'lengths' must be [B]; got ",
              describe(lengths));
  const at::ScalarType acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto prep = [&](const Tensor& t) { return t.to(acc).contiguous(); };
  auto row_grad = [&](const std::optional<Tensor>& g, const char* name) {
    if (!given(g)) return Tensor();
    TORCH_CHECK(g->dim() == 3 && g->size(0) == B && g->size(1) == H && g->size(2) == T_, kOp, "argument '",
                name, "' must be [B, H, T]; got ", describe(*g));
    return prep(*g);
  };
  Tensor len64 = lengths.to(at::kLong).contiguous();
  const int64_t* lp = len64.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(lp[b] >= 0 && lp[b] <= T_, kOp, "argument 'lengths' must hold values in [0, T=", T_, "]; got ",
                lp[b]);
  Tensor go;
  if (given(grad_out)) {
    TORCH_CHECK(grad_out->sizes() == out.sizes(), kOp, "argument 'grad_out' must have out's shape; got ",
                describe(*grad_out));
    go = prep(*grad_out);
  }
  Tensor gl = row_grad(grad_lse, "grad_lse"), ge = row_grad(grad_entropy, "grad_entropy"),
         gd = row_grad(grad_distance, "grad_distance"), gc = row_grad(grad_colmass, "grad_colmass");
  Tensor entc, distc;
  if (ge.defined()) {
    TORCH_CHECK(entropy.sizes() == lse.sizes(), kOp, "a gradient for entropy needs the forward's entropy [B, H, T]; got ",
                describe(entropy));
    entc = prep(entropy);
  }
  if (gd.defined()) {
    TORCH_CHECK(distance.sizes() == lse.sizes(), kOp,
                "a gradient for distance needs the forward's distance [B, H, T]; got ", describe(distance));
    distc = prep(distance);
  }

  BwdParams P{B, H, T_, D, Dv, scale, span, renorm, go.defined(), gl.defined(), ge.defined(), gd.defined(),
              gc.defined(), false, {1, 1, 1, 1}};
  Tensor bias_c;
  int64_t bstr[4] = {0, 0, 0, 0};
  const bool has_bias = bias.has_value() && bias->defined();
  std::vector<int64_t> bias_shape4 = {1, 1, 1, 1};
  if (has_bias) {
    const Tensor& bs = *bias;
    TORCH_CHECK(bs.dim() <= 4 && at::is_expandable_to(bs.sizes(), {B, H, T_, T_}), kOp,
                "argument 'bias' must be broadcastable to [B, H, T, T]; got ", describe(bs));
    for (int64_t d = 0; d < bs.dim(); ++d) bias_shape4[4 - bs.dim() + d] = bs.size(d);
    bias_c = cpu::compact_bias(bs, B, H, T_, acc, bstr);  // read through its strides (cpu/bias.h)
  }
  Tensor dbias_acc;
  if (want_grad_bias) {
    TORCH_CHECK(has_bias, kOp, "want_grad_bias needs a bias");
    P.want_dbias = true;
    // size 1 where the given bias broadcasts (the gradient is summed there), else the full size
    const int64_t full[4] = {B, H, T_, T_};
    for (int d = 0; d < 4; ++d) P.bias_size[d] = bias_shape4[d] == 1 ? 1 : full[d];
    dbias_acc = at::zeros({P.bias_size[0], P.bias_size[1], P.bias_size[2], P.bias_size[3]}, q.options().dtype(acc));
  }
  Tensor mask_c;
  if (head_mask.has_value() && head_mask->defined()) {
    TORCH_CHECK(head_mask->scalar_type() == at::kBool && head_mask->dim() == 2 && head_mask->size(0) == B &&
                    head_mask->size(1) == H,
                kOp, "argument 'head_mask' must be a bool tensor [B, H]; got ", describe(*head_mask));
    mask_c = head_mask->contiguous();
  }

  Tensor qc = prep(q), kc = prep(k), vc = prep(v), oc = prep(out), lc = prep(lse);
  auto so = q.options().dtype(acc);
  // uninitialized: run_backward zeroes them (see zero_in_task)
  Tensor dq = at::empty({B, H, T_, D}, so), dk = at::empty({B, H, T_, D}, so), dv = at::empty({B, H, T_, Dv}, so);
  AT_DISPATCH_FLOATING_TYPES(acc, "satkern_fused_attention_backward_cpu", [&] {
    auto ptr = [](const Tensor& t) -> const scalar_t* { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    run_backward<scalar_t>(P, ptr(qc), ptr(kc), ptr(vc), ptr(oc), ptr(lc), ptr(entc), ptr(distc), ptr(go),
                           ptr(gl), ptr(ge), ptr(gd), ptr(gc), lp, ptr(bias_c), bstr,
                           mask_c.defined() ? mask_c.data_ptr<bool>() : nullptr, dq.data_ptr<scalar_t>(),
                           dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(),
                           dbias_acc.defined() ? dbias_acc.data_ptr<scalar_t>() : nullptr);
  });
  Tensor dbias = at::empty({0}, q.options());
  if (want_grad_bias) dbias = dbias_acc.reshape(bias->sizes()).to(bias->scalar_type());
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type()), dbias};
}

}  // namespace
}  // namespace satkern

TORCH_LIBRARY_IMPL(satkern, CPU, m) {
  m.impl("fused_attention_backward", &satkern::fused_attention_backward_cpu);
}

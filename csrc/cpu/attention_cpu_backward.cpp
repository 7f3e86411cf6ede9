// CPU implementation of satkern::fused_attention_backward (schema in satkern/ops/schema.py; the
// autograd formula that calls it is satkern/ops/autograd.py).
//
// Gradients of the forward's out (and lse, entropy, distance, colmass) with respect to q, k, v and
// bias. FlashAttention-2's backward adapted to the CPU's row blocks: per block of BQ query rows the
// probabilities are recomputed from the saved lse over the block's key window (the same window as
// the forward: all valid keys, or the band in renorm mode), never T x T:
//   S   = scale Q_blk K_win^T (+ bias),  P = exp(S - lse)          BLAS gemm
//   dP  = dO_blk V_win^T (zeroed off the band in zero-span mode)    BLAS gemm
//   per row i, with Delta_i = dO_i . out_i (FlashAttention's rowsum(dO o O)):
//     dS_ij = P_ij * ( dP_ij - Delta_i                               out
//                    + g_lse_i                                       lse
//                    - g_ent_i (log P_ij + H_i)                       entropy: dH/ds_j = -p_j (log p_j + H)
//                    + g_dist_i (|i - j| - dist_i)                    distance: d dist/ds_j = p_j (|i-j| - dist)
//                    + g_col_j - r_i )                                colmass, r_i = sum_k P_ik g_col_k
//     (the whole row of P is in the block buffer, so r_i needs no pre-pass over the scores on a CPU)
//   dV_win += P'^T dO_blk   (P' = P zeroed off the band in zero-span mode)   BLAS gemm
//   dK_win += scale dS^T Q_blk,  dQ_blk = scale dS K_win,  dBias_blk = dS   BLAS gemm
//
// Parallel work: a task is one (group of heads, chunk of query blocks). A group is one (b, h) head,
// or, when the bias gradient is asked for and the bias is broadcast over the batch and/or the heads,
// every head that shares one slice of the bias: the task loops over them in order, so a broadcast
// bias gradient is summed without races. Chunks split a head's query blocks when there are fewer
// groups than threads; each chunk then accumulates dK/dV into its own buffer, summed in chunk order at
// the end. Every sum is in a fixed order for a fixed thread count: bitwise deterministic.
//
// Padded query rows, padded keys, empty rows (lse = -inf) and masked heads (head_mask false) get and
// give no gradient; masked heads are skipped (no work).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "cpu/bias.h"
#include "cpu/blas.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <sstream>
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

// The per-row constants of dS_ij = P_ij (dP_ij + c + g_col_j - g_ent t_ij + g_dist |i - j|), t = s - lse.
template <typename T>
struct RowGrad {
  T lse;     // the row's log-sum-exp (finite)
  T c;       // -Delta + g_lse - g_ent H - g_dist dist - r
  T g_ent;   // entropy gradient of the row
  T g_dist;  // distance gradient of the row
};

// One row over window coordinates [a, e) (key index kw0 + j): on entry s[j] = scale q.k (+ bias
// added here, through brow / bsj), dp[j] = dP (0 off the band in zero-span mode, or unused when
// !OUT); gcol = g_col + kw0 (unused when !COL). On return s[j] = P_ij and dp[j] = dS_ij on [a, e).
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

// r_i = sum_j P_ij g_col_j over [a, e), with s already holding scores + bias.
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

template <typename T>
using GradRowFn = void (*)(T*, T*, int64_t, int64_t, int64_t, int64_t, const T*, int64_t, const T*,
                           const RowGrad<T>&);

template <typename T, bool OUT, bool ENT>
GradRowFn<T> pick3(bool dist, bool col) {
  if (dist && col) return &grad_row<T, OUT, ENT, true, true>;
  if (dist) return &grad_row<T, OUT, ENT, true, false>;
  if (col) return &grad_row<T, OUT, ENT, false, true>;
  return &grad_row<T, OUT, ENT, false, false>;
}

template <typename T>
GradRowFn<T> pick_grad_row(bool out, bool ent, bool dist, bool col) {
  if (out && ent) return pick3<T, true, true>(dist, col);
  if (out) return pick3<T, true, false>(dist, col);
  if (ent) return pick3<T, false, true>(dist, col);
  return pick3<T, false, false>(dist, col);
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

  // Query block size: 64 rows (as the forward), halved while the two BQ x window buffers would
  // exceed 2 MB; in renorm mode about the span. Independent of the thread count.
  int64_t BQ = 64;
  if (band_keys) BQ = std::max<int64_t>(16, std::min<int64_t>(64, r));
  auto window_max = [&](int64_t bq) { return band_keys ? std::min(T_, bq + 2 * r) : T_; };
  while (BQ > 16 && 2 * BQ * window_max(BQ) * (int64_t)sizeof(T) > (int64_t(1) << 21)) BQ /= 2;
  const int64_t nblk = (T_ + BQ - 1) / BQ;
  const int64_t ldS = window_max(BQ);

  // groups of heads that share one slice of the bias gradient (see the header)
  const int64_t* bsz = P.bias_size;
  const bool share_b = P.want_dbias && bsz[0] == 1 && B > 1;
  const bool share_h = P.want_dbias && bsz[1] == 1 && H > 1;
  const int64_t GB = share_b ? 1 : B, GH = share_h ? 1 : H;
  const int64_t ngroups = GB * GH;
  const bool rows_summed = P.want_dbias && bsz[2] == 1;  // dbias summed over query rows: one chunk
  int64_t nchunks = 1;
  if (!rows_summed && ngroups < nthreads) nchunks = std::min<int64_t>(nblk, (nthreads + ngroups - 1) / ngroups);
  const int64_t blocks_per_chunk = (nblk + nchunks - 1) / nchunks;
  const int64_t BHT = B * H * T_;
  Tensor part_t;  // per-chunk dK/dV partials (only when a head's blocks are split)
  if (nchunks > 1) part_t = at::zeros({nchunks * BHT * (D + Dv)}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  T* const part = nchunks > 1 ? part_t.data_ptr<T>() : nullptr;

  const GradRowFn<T> row_fn = pick_grad_row<T>(P.g_out, P.g_ent, P.g_dist, P.g_col);
  constexpr T ninf = -std::numeric_limits<T>::infinity();

  at::parallel_for(0, ngroups * nchunks, 1, [&](int64_t begin, int64_t end) {
    Tensor buf_t = at::empty({2 * BQ * ldS + ldS}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
    T* const S = buf_t.data_ptr<T>();
    T* const dS = S + BQ * ldS;
    T* const colsum = dS + BQ * ldS;  // dbias summed over rows, per block
    for (int64_t task = begin; task < end; ++task) {
      const int64_t chunk = task % nchunks;
      const int64_t grp = task / nchunks;
      const int64_t gb = grp / GH, gh = grp % GH;
      const int64_t blk0 = chunk * blocks_per_chunk, blk1 = std::min(nblk, blk0 + blocks_per_chunk);
      for (int64_t b = share_b ? 0 : gb; b < (share_b ? B : gb + 1); ++b) {
        for (int64_t h = share_h ? 0 : gh; h < (share_h ? H : gh + 1); ++h) {
          if (head_mask != nullptr && !head_mask[b * H + h]) continue;  // masked head: no work
          const int64_t bh = b * H + h;
          const int64_t rowbase = bh * T_;
          const int64_t len = lengths[b];
          T* dkh = nchunks > 1 ? part + chunk * BHT * (D + Dv) + rowbase * D : dk + rowbase * D;
          T* dvh = nchunks > 1 ? part + chunk * BHT * (D + Dv) + BHT * D + rowbase * Dv : dv + rowbase * Dv;
          T* dbh = nullptr;
          if (P.want_dbias)
            dbh = dbias + ((bsz[0] == 1 ? 0 : b) * bsz[1] + (bsz[1] == 1 ? 0 : h)) * bsz[2] * bsz[3];
          for (int64_t blk = blk0; blk < blk1; ++blk) {
            const int64_t i0 = blk * BQ;
            const int64_t i1 = std::min(std::min(T_, i0 + BQ), len);
            if (i0 >= i1) break;
            const int64_t nq = i1 - i0;
            const int64_t kw0 = band_keys ? std::max<int64_t>(0, i0 - r) : 0;
            const int64_t kw1 = band_keys ? std::min<int64_t>(len, i1 - 1 + r + 1) : len;
            const int64_t w = kw1 - kw0;
            if (w <= 0) continue;
            const T* qb = q + (rowbase + i0) * D;
            const T* kb = k + (rowbase + kw0) * D;
            const T* vb = v + (rowbase + kw0) * Dv;
            const T* gob = P.g_out ? gout + (rowbase + i0) * Dv : nullptr;

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
              const T l = lse[rowbase + i];
              if (l == ninf || a >= e) {  // empty row: no distribution, no gradient
                std::fill(srow, srow + w, T(0));
                std::fill(drow, drow + w, T(0));
                continue;
              }
              if (zero_span && P.g_out) {  // out uses P zeroed off the band: so does dP
                const int64_t lo = std::min(std::max<int64_t>(0, i - r), w);
                const int64_t hi = std::max(std::min<int64_t>(w, i + r + 1), lo);
                std::fill(drow, drow + lo, T(0));
                std::fill(drow + hi, drow + w, T(0));
              }
              const T* brow = nullptr;
              if (bias != nullptr) brow = bias + b * bstr[0] + h * bstr[1] + i * bstr[2] + kw0 * bstr[3];
              RowGrad<T> g{l, T(0), T(0), T(0)};
              if (P.g_out) g.c -= dot(gob + ii * Dv, out + (rowbase + i) * Dv, Dv);
              if (P.g_lse) g.c += glse[rowbase + i];
              if (P.g_ent) {
                g.g_ent = gent[rowbase + i];
                g.c -= g.g_ent * ent[rowbase + i];
              }
              if (P.g_dist) {
                g.g_dist = gdist[rowbase + i];
                g.c -= g.g_dist * dist[rowbase + i];
              }
              const T* gc = P.g_col ? gcol + rowbase + kw0 : nullptr;
              if (P.g_col) {
                // bias first (grad_row would add it again: pass no bias then)
                if (brow != nullptr) {
                  for (int64_t j = a; j < e; ++j) srow[j] += brow[j * bstr[3]];
                  brow = nullptr;
                }
                g.c -= colmass_rowsum(srow, a, e, l, gc);
              }
              row_fn(srow, drow, a, e, kw0, i, brow, bstr[3], gc, g);
              std::fill(srow, srow + a, T(0));
              std::fill(srow + e, srow + w, T(0));
              std::fill(drow, drow + a, T(0));
              std::fill(drow + e, drow + w, T(0));
              if (zero_span) {  // dV uses P' = P zeroed off the band
                const int64_t lo = std::min(std::max<int64_t>(0, i - r), w);
                const int64_t hi = std::max(std::min<int64_t>(w, i + r + 1), lo);
                std::fill(srow, srow + lo, T(0));
                std::fill(srow + hi, srow + w, T(0));
              }
            }

            if (P.g_out) gemm<T>(true, false, w, Dv, nq, T(1), S, ldS, gob, Dv, T(1), dvh + kw0 * Dv, Dv);
            gemm<T>(true, false, w, D, nq, scale, dS, ldS, qb, D, T(1), dkh + kw0 * D, D);
            gemm<T>(false, false, nq, D, w, scale, dS, ldS, kb, D, T(0), dq + (rowbase + i0) * D, D);

            if (dbh != nullptr) {
              const int64_t sr = bsz[2] == 1 ? 0 : bsz[3];  // row stride of the gradient slice
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
                  T* dst = dbh + (i0 + ii) * sr + kw0;
                  const T* src = dS + ii * ldS;
                  for (int64_t j = 0; j < w; ++j) dst[j] += src[j];
                }
              }
            }
          }
        }
      }
    }
  });

  if (nchunks > 1) {  // sum the chunks' dK/dV in chunk order
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        for (int64_t c = 0; c < nchunks; ++c) {
          const T* pk = part + c * BHT * (D + Dv) + bh * T_ * D;
          const T* pv = part + c * BHT * (D + Dv) + BHT * D + bh * T_ * Dv;
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
  Tensor dq = at::zeros({B, H, T_, D}, so), dk = at::zeros({B, H, T_, D}, so), dv = at::zeros({B, H, T_, Dv}, so);
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

"""Triton kernels of the ``triton`` backend (raw ``@triton.jit`` functions; launchers in ``launch.py``).

Two passes, both deterministic (no atomics: every output element is written by exactly one program, and
its summation order is fixed by the block sizes; so results are bitwise reproducible for one config; two
processes whose autotuners picked different block sizes may differ in the last bits):

* ``_attention_fwd_kernel`` (pass 1): one program per (query block, batch*head). FlashAttention-2 style
  online softmax over key blocks, in base 2 (scores are multiplied by log2(e) once, so ``exp2`` is used
  everywhere). Besides the running max ``m`` and sum ``l`` it keeps, when asked for (constexpr flags, so
  a statistic not asked for costs nothing):

  - ``e``  = sum_k p_k (s_k - m)            -> entropy  = ln2 * (log2 l - e / l)
  - ``d``  = sum_k p_k abs(q - k)           -> distance = d / l
  - ``lm`` = sum_k p_k W[k, :]              -> label_mass = lm / l
  - maxweight = 1 / l (the largest p is exp2(m - m) = 1)

  where p_k = exp2(s_k - m) with the current running max. When the max moves from m to m' every sum is
  rescaled by alpha = exp2(m - m'); ``e`` also gains (m - m') * l (see METRICS.md, "online forms").

* ``_colmass_kernel`` (pass 2, only for ``colmass``): one program per (key block, batch*head); loops over
  the query blocks that can attend to it, recomputes the scores transposed (S^T = K Q^T, keys as rows) and
  sums exp2(s * c - lse2) over the valid query rows (a row reduction, no cross-warp traffic).

Span handling (``SPAN_MODE``: 0 none, 1 zero, 2 renorm). In renorm mode only key blocks intersecting the
band |q - k| <= r are visited. In zero mode the normalizer and the statistics need every valid key, but
the P@V product only the band: the key loop is split into [0, band) stats only, [band) stats + P@V with
the band mask, [band end, length) stats only (the off-band / on-band split of the Triton tutorial).

Blocks wholly past the valid length are never visited; a program whose query block is past the length,
or whose head is masked, runs empty loops and only writes its zeros / NaNs.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # 1 / ln(2): natural-log scores -> base-2 scores
LN2 = 0.6931471805599453  # ln(2): base-2 quantities -> natural log


@triton.jit
def _dot(a, b, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """a @ b with fp32 accumulation. UPCAST_DOT: the Triton interpreter (3.x) computes bfloat16 dots on the
    raw bits, so under the interpreter bf16 operands are widened to fp32 first (bf16 x bf16 products are
    exact in fp32, so the result equals a tensor-core bf16 dot up to summation order). Never set on GPU."""
    if UPCAST_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=DOT_PRECISION)


@triton.jit
def _dot_acc(a, b, acc, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """acc + a @ b, accumulating in the dot itself (no separate product tile held next to ``acc``)."""
    if UPCAST_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def _bias_offsets(offs_m, offs_n, stride_bq, stride_bk):
    """Element offsets [BLOCK_M, BLOCK_N] of bias[q, k] inside one (b, h) slice, in int64: a dense bias has
    stride_bq = T, so q * stride_bq passes 2**31 from T ~ 46 341 on (int32 offsets wrapped around)."""
    return offs_m.to(tl.int64)[:, None] * stride_bq + offs_n.to(tl.int64)[None, :] * stride_bk


@triton.jit
def _bias_offsets_t(offs_n, offs_m, stride_bq, stride_bk):
    """Element offsets [BLOCK_N, BLOCK_M] of bias[q, k] (transposed: keys as rows), in int64."""
    return offs_n.to(tl.int64)[:, None] * stride_bk + offs_m.to(tl.int64)[None, :] * stride_bq


@triton.jit
def _fwd_inner(acc, m_i, l_i, e_i, d_i, lm_i,
               q, k_base, v_base, bias_base, w_base,
               stride_kt, stride_kd, stride_vt, stride_vd, stride_bq, stride_bk, stride_wt, stride_wl,
               offs_m, offs_d, offs_l, length, T, D, L, qk_scale, span, lo, hi,
               BLOCK_N: tl.constexpr, KEY_MASK: tl.constexpr, BAND_SCORES: tl.constexpr,
               DO_PV: tl.constexpr, BAND_PV: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_D: tl.constexpr,
               WANT_ENTROPY: tl.constexpr, WANT_DISTANCE: tl.constexpr, WANT_LABELS: tl.constexpr,
               DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr, FUSED_SCALE: tl.constexpr,
               DIST_SIDE: tl.constexpr = 0):
    """Process key blocks [lo, hi) (lo a multiple of BLOCK_N) and return the updated running state.

    KEY_MASK: some keys of a block may be >= length (else every key is valid and loads are unmasked).
    BAND_SCORES: keys with abs(q-k) > span are excluded from the softmax (renorm).
    DO_PV / BAND_PV: accumulate P@V, with the band mask on P (zero mode) or not.
    DIST_SIDE: where the keys of every block in [lo, hi) lie relative to every query row of the program:
    0 anywhere (distance sums p * abs(q - k) per score), 1 all left (k < q), 2 all right (k > q). Off the
    diagonal, sum_k p abs(q - k) = +-((q - n0) sum_k p - sum_j p j) with k = n0 + j: one FMA per score
    (p * j, j the key's position in the block) instead of a subtract, an abs and an FMA, and sum_k p is
    the l update's own sum.
    """
    arange_n = tl.arange(0, BLOCK_N).to(tl.float32)  # key positions inside a block, as floats
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < length
        # K^T tile [BLOCK_D, BLOCK_N]
        kt_ptrs = k_base + offs_n[None, :] * stride_kt + offs_d[:, None] * stride_kd
        if KEY_MASK:
            if EVEN_D:
                kt = tl.load(kt_ptrs, mask=key_ok[None, :], other=0.0)
            else:
                kt = tl.load(kt_ptrs, mask=key_ok[None, :] & (offs_d[:, None] < D), other=0.0)
        else:
            if EVEN_D:
                kt = tl.load(kt_ptrs)
            else:
                kt = tl.load(kt_ptrs, mask=offs_d[:, None] < D, other=0.0)
        s = _dot(q, kt, DOT_PRECISION, UPCAST_DOT)
        if FUSED_SCALE:
            # no bias and qk_scale > 0: scale the row max instead of every score, and fold the scale
            # into the exponent's subtraction (one FMA per element, as in the Triton tutorial)
            if KEY_MASK:
                s = tl.where(key_ok[None, :], s, float("-inf"))
            if BAND_SCORES:
                s = tl.where(tl.abs(offs_m[:, None] - offs_n[None, :]) <= span, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing admissible yet
            x = tl.fma(s, qk_scale, -m_use[:, None])  # explicit: Triton's default FP fusion is going away
        else:
            s = s * qk_scale
            if HAS_BIAS:
                b_ptrs = bias_base + _bias_offsets(offs_m, offs_n, stride_bq, stride_bk)
                b = tl.load(b_ptrs, mask=(offs_m[:, None] < T) & key_ok[None, :], other=0.0)
                s = s + b.to(tl.float32) * 1.4426950408889634  # 1/ln 2: bias into base-2 units
            if KEY_MASK:
                s = tl.where(key_ok[None, :], s, float("-inf"))
            if BAND_SCORES:
                s = tl.where(tl.abs(offs_m[:, None] - offs_n[None, :]) <= span, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing admissible yet
            x = s - m_use[:, None]  # base-2 score minus the running max (<= 0, or -inf)
        alpha = tl.math.exp2(m_i - m_use)  # 0 while m_i = -inf (l_i = 0 then)
        p = tl.math.exp2(x)
        p_sum = tl.sum(p, 1)
        if WANT_ENTROPY:
            # (m_old - m_new) * l_old, written so that m_old = -inf (l_old = 0) gives 0, not -inf * 0
            shift = (tl.where(l_i > 0, m_i, m_use) - m_use) * l_i
            if KEY_MASK or BAND_SCORES or HAS_BIAS:  # x may be -inf where p = 0: avoid 0 * -inf
                e_i = alpha * (e_i + shift) + tl.sum(p * tl.where(p > 0, x, 0.0), 1)
            else:
                e_i = alpha * (e_i + shift) + tl.sum(p * x, 1)
        if WANT_DISTANCE:
            n0 = start_n.to(tl.float32)
            if DIST_SIDE == 0:
                # float positions: sub + abs + fma per score (no integer->float conversion per score)
                gap = tl.abs(offs_m.to(tl.float32)[:, None] - (n0 + arange_n)[None, :])
                d_i = alpha * d_i + tl.sum(p * gap, 1)
            else:
                pj = tl.sum(p * arange_n[None, :], 1)
                side = (offs_m.to(tl.float32) - n0) * p_sum - pj  # sum_k p (q - k)
                if DIST_SIDE == 1:
                    d_i = alpha * d_i + side
                else:
                    d_i = alpha * d_i - side
        if WANT_LABELS:
            w_ptrs = w_base + offs_n[:, None] * stride_wt + offs_l[None, :] * stride_wl
            w = tl.load(w_ptrs, mask=key_ok[:, None] & (offs_l[None, :] < L), other=0.0)
            # in the input dtype on tensor cores, like P@V (fp32 inputs: exact fp32 products)
            lm_i = _dot_acc(p.to(q.dtype), w.to(q.dtype), lm_i * alpha[:, None], DOT_PRECISION, UPCAST_DOT)
        if DO_PV:
            v_ptrs = v_base + offs_n[:, None] * stride_vt + offs_d[None, :] * stride_vd
            if KEY_MASK:
                if EVEN_D:
                    v = tl.load(v_ptrs, mask=key_ok[:, None], other=0.0)
                else:
                    v = tl.load(v_ptrs, mask=key_ok[:, None] & (offs_d[None, :] < D), other=0.0)
            else:
                if EVEN_D:
                    v = tl.load(v_ptrs)
                else:
                    v = tl.load(v_ptrs, mask=offs_d[None, :] < D, other=0.0)
            if BAND_PV:
                pv = tl.where(tl.abs(offs_m[:, None] - offs_n[None, :]) <= span, p, 0.0)
            else:
                pv = p
            acc = _dot_acc(pv.to(v.dtype), v, acc * alpha[:, None], DOT_PRECISION, UPCAST_DOT)
        else:
            acc = acc * alpha[:, None]
        l_i = tl.fma(l_i, alpha, p_sum)
        m_i = m_new
    return acc, m_i, l_i, e_i, d_i, lm_i


@triton.jit
def _program_block(Lengths, T, H, BLOCK: tl.constexpr):
    """``(bh, b, h, b64, h64, length, start)`` of this program: the grid's one axis enumerates blocks of
    ``BLOCK`` (rows in pass 1, keys in pass 2) within each batch*head, block index fastest."""
    pid = tl.program_id(0)
    num_blocks = tl.cdiv(T, BLOCK)
    bh = pid // num_blocks
    b = bh // H
    h = bh % H
    length = tl.load(Lengths + b).to(tl.int32)
    return bh, b, h, b.to(tl.int64), h.to(tl.int64), length, (pid % num_blocks) * BLOCK


@triton.jit
def _attention_fwd_kernel(
        Q, K, V, Lengths, Bias, HeadMask, W,
        Out, Lse, Ent, Dist, MaxW, LabelMass,
        stride_qb, stride_qh, stride_qt, stride_qd,
        stride_kb, stride_kh, stride_kt, stride_kd,
        stride_vb, stride_vh, stride_vt, stride_vd,
        stride_bb, stride_bh, stride_bq, stride_bk,
        stride_wb, stride_wt, stride_wl,
        stride_ob, stride_oh, stride_ot, stride_od,
        H, T, D, L, qk_scale, span,
        T_BUCKET,  # autotuning key only (next power of two of T)
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
        SPAN_MODE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_HEAD_MASK: tl.constexpr,
        WANT_ENTROPY: tl.constexpr, WANT_DISTANCE: tl.constexpr, WANT_MAXWEIGHT: tl.constexpr,
        WANT_LABELS: tl.constexpr, EVEN_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
        UPCAST_DOT: tl.constexpr = False, FUSED_SCALE: tl.constexpr = False):
    """Pass 1. Out [B,H,T,D] (strides given), Lse/Ent/Dist/MaxW contiguous [B,H,T] float32,
    LabelMass contiguous [B,H,T,L] float32. ``qk_scale`` = scale / ln 2; ``span`` <= T."""
    bh, b, h, b64, h64, length, start_m = _program_block(Lengths, T, H, BLOCK_M)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_l = tl.arange(0, BLOCK_L)

    active = start_m < length
    if HAS_HEAD_MASK:
        keep = tl.load(HeadMask + bh) != 0
        active = active & keep
    n_end = tl.where(active, length, 0)  # keys to visit: none for padded blocks and masked heads

    q_ptrs = Q + b64 * stride_qb + h64 * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :] * stride_qd
    q_mask = (offs_m[:, None] < n_end) & (offs_d[None, :] < D)
    q = tl.load(q_ptrs, mask=q_mask, other=0.0)
    k_base = K + b64 * stride_kb + h64 * stride_kh
    v_base = V + b64 * stride_vb + h64 * stride_vh
    bias_base = Bias + b64 * stride_bb + h64 * stride_bh
    w_base = W + b64 * stride_wb

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    e_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    d_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    lm_i = tl.zeros([BLOCK_M, BLOCK_L], dtype=tl.float32)

    # ---- the key loop, in stages: stage i visits the key blocks [lo, hi) with its own compile-time flags
    # (see _fwd_inner; every stage a SPAN_MODE does not use is left out at compile time):
    #
    #   SPAN_MODE 0, distance: whole blocks left of the query block | touching it | right of it | the block
    #                          straddling the length (masked); the distance's cheap form off the diagonal
    #   SPAN_MODE 0, else:     whole blocks | the block straddling the length (masked)
    #   SPAN_MODE 2 (renorm):  the key blocks that intersect the band (masked; only the band takes part)
    #   SPAN_MODE 1 (zero):    left of the band (statistics only) | the band (P@V with the band mask) |
    #                          right of the band (statistics only): normalizer and statistics over every
    #                          valid key, P@V over the band only
    full_hi = (n_end // BLOCK_N) * BLOCK_N  # whole key blocks below the length
    left_hi = tl.minimum((start_m // BLOCK_N) * BLOCK_N, full_hi)
    right_lo = tl.maximum(tl.minimum(tl.cdiv(start_m + BLOCK_M, BLOCK_N) * BLOCK_N, full_hi), left_hi)
    # key blocks that intersect the band of this query block: [start_m - r, start_m + BLOCK_M - 1 + r]
    band_lo = tl.minimum((tl.maximum(start_m - span, 0) // BLOCK_N) * BLOCK_N, n_end)
    band_hi = tl.minimum(start_m + BLOCK_M + span, n_end)
    band_end = band_lo + ((tl.maximum(band_hi - band_lo, 0) + BLOCK_N - 1) // BLOCK_N) * BLOCK_N
    SIDES: tl.constexpr = (SPAN_MODE == 0) & WANT_DISTANCE
    NUM_STAGES: tl.constexpr = 4 if SIDES else (2 if SPAN_MODE == 0 else (1 if SPAN_MODE == 2 else 3))
    for stage in tl.static_range(NUM_STAGES):
        if SPAN_MODE == 0:
            if SIDES:
                lo = 0 if stage == 0 else (left_hi if stage == 1 else (right_lo if stage == 2 else full_hi))
                hi = left_hi if stage == 0 else (right_lo if stage == 1 else (full_hi if stage == 2 else n_end))
            else:
                lo = 0 if stage == 0 else full_hi
                hi = full_hi if stage == 0 else n_end
        elif SPAN_MODE == 2:
            lo = band_lo
            hi = band_hi
        else:
            lo = 0 if stage == 0 else (band_lo if stage == 1 else band_end)
            hi = band_lo if stage == 0 else (band_hi if stage == 1 else n_end)
        acc, m_i, l_i, e_i, d_i, lm_i = _fwd_inner(
            acc, m_i, l_i, e_i, d_i, lm_i, q, k_base, v_base, bias_base, w_base,
            stride_kt, stride_kd, stride_vt, stride_vd, stride_bq, stride_bk, stride_wt, stride_wl,
            offs_m, offs_d, offs_l, length, T, D, L, qk_scale, span, lo, hi,
            BLOCK_N=BLOCK_N,
            KEY_MASK=stage == NUM_STAGES - 1 if SPAN_MODE == 0 else (SPAN_MODE == 2 or stage > 0),
            BAND_SCORES=SPAN_MODE == 2,
            DO_PV=SPAN_MODE != 1 or stage == 1,
            BAND_PV=SPAN_MODE == 1 and stage == 1,
            HAS_BIAS=HAS_BIAS, EVEN_D=EVEN_D, WANT_ENTROPY=WANT_ENTROPY, WANT_DISTANCE=WANT_DISTANCE,
            WANT_LABELS=WANT_LABELS, DOT_PRECISION=DOT_PRECISION, UPCAST_DOT=UPCAST_DOT, FUSED_SCALE=FUSED_SCALE,
            # keys wholly left of every query row of the program (1), wholly right of them (2), or anywhere (0)
            DIST_SIDE=(1 if stage == 0 else (2 if stage == 2 else 0)) if SIDES or SPAN_MODE == 1 else 0)

    # ---- epilogue: padded rows 0; empty rows (l = 0) out 0, lse -inf, stats 0; masked heads NaN stats
    row_valid = offs_m < length
    nonempty = row_valid & (l_i != 0)  # NaN l (NaN inputs) counts as nonempty: NaN propagates
    l_safe = tl.where(l_i != 0, l_i, 1.0)
    inv_l = 1.0 / l_safe
    out = tl.where(nonempty[:, None], acc * inv_l[:, None], 0.0)
    lse = tl.where(nonempty, (m_i + tl.log2(l_safe)) * 0.6931471805599453,  # ln 2: base 2 -> natural
                   tl.where(row_valid, float("-inf"), 0.0))
    nan_row = tl.zeros([BLOCK_M], dtype=tl.int1)
    if HAS_HEAD_MASK:
        nan_row = (offs_m >= 0) & (keep == 0)
        lse = tl.where(nan_row, float("nan"), lse)
    row_in = offs_m < T
    o_ptrs = Out + b64 * stride_ob + h64 * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_in[:, None] & (offs_d[None, :] < D))
    stat_off = bh.to(tl.int64) * T + offs_m
    tl.store(Lse + stat_off, lse, mask=row_in)
    if WANT_ENTROPY:
        ent = tl.where(nonempty, (tl.log2(l_safe) - e_i * inv_l) * 0.6931471805599453, 0.0)  # ln 2
        if HAS_HEAD_MASK:
            ent = tl.where(nan_row, float("nan"), ent)
        tl.store(Ent + stat_off, ent, mask=row_in)
    if WANT_DISTANCE:
        dist = tl.where(nonempty, d_i * inv_l, 0.0)
        if HAS_HEAD_MASK:
            dist = tl.where(nan_row, float("nan"), dist)
        tl.store(Dist + stat_off, dist, mask=row_in)
    if WANT_MAXWEIGHT:
        mw = tl.where(nonempty, inv_l, 0.0)
        if HAS_HEAD_MASK:
            mw = tl.where(nan_row, float("nan"), mw)
        tl.store(MaxW + stat_off, mw, mask=row_in)
    if WANT_LABELS:
        lm = tl.where(nonempty[:, None], lm_i * inv_l[:, None], 0.0)
        if HAS_HEAD_MASK:
            lm = tl.where(nan_row[:, None], float("nan"), lm)
        lm_ptrs = LabelMass + stat_off[:, None] * L + offs_l[None, :]
        tl.store(lm_ptrs, lm, mask=row_in[:, None] & (offs_l[None, :] < L))


@triton.jit
def _colmass_kernel(
        Q, K, Lengths, Bias, HeadMask, Lse, ColMass,
        stride_qb, stride_qh, stride_qt, stride_qd,
        stride_kb, stride_kh, stride_kt, stride_kd,
        stride_bb, stride_bh, stride_bq, stride_bk,
        H, T, D, qk_scale, span,
        T_BUCKET,  # autotuning key only
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        SPAN_MODE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_HEAD_MASK: tl.constexpr,
        EVEN_D: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr = False):
    """Pass 2: ColMass[b,h,k] = sum over valid rows q of exp(s[q,k] - lse[q]) (A before zeroing in zero
    mode; the banded distribution in renorm). Lse is pass 1's natural-log lse, contiguous [B,H,T]."""
    bh, b, h, b64, h64, length, start_n = _program_block(Lengths, T, H, BLOCK_N)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)

    active = start_n < length
    if HAS_HEAD_MASK:
        keep = tl.load(HeadMask + bh) != 0
        active = active & keep
    m_end = tl.where(active, length, 0)
    key_ok = offs_n < length

    # The key block is the row side: S^T = K Q^T ([BLOCK_N keys, BLOCK_M queries]) and each key's column sum
    # is a ROW reduction over the queries (the dK/dV structure of the Triton tutorial's backward). Reducing
    # S = Q K^T over its rows instead crossed warps, through shared memory, with ~9 barriers per query block.
    k_ptrs = K + b64 * stride_kb + h64 * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :] * stride_kd
    kb = tl.load(k_ptrs, mask=(offs_n[:, None] < m_end) & (offs_d[None, :] < D), other=0.0)
    q_base = Q + b64 * stride_qb + h64 * stride_qh
    bias_base = Bias + b64 * stride_bb + h64 * stride_bh
    lse_base = Lse + bh.to(tl.int64) * T

    if SPAN_MODE == 2:
        lo = tl.minimum((tl.maximum(start_n - span, 0) // BLOCK_M) * BLOCK_M, m_end)
        hi = tl.minimum(start_n + BLOCK_N + span, m_end)
    else:
        lo = 0
        hi = m_end
    col = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < length
        qt_ptrs = q_base + offs_m[None, :] * stride_qt + offs_d[:, None] * stride_qd  # Q^T [BLOCK_D, BLOCK_M]
        if EVEN_D:
            qt = tl.load(qt_ptrs, mask=row_ok[None, :], other=0.0)
        else:
            qt = tl.load(qt_ptrs, mask=row_ok[None, :] & (offs_d[:, None] < D), other=0.0)
        st = _dot(kb, qt, DOT_PRECISION, UPCAST_DOT)
        # lse in base 2 (one multiply per query row, not per score); padded and empty rows (lse = -inf) add
        # nothing: exp2(s - inf) = 0. (!= -inf, not > -inf: a NaN lse, from NaN scores, must make the
        # column NaN, as in the reference.)
        lse2 = tl.load(lse_base + offs_m, mask=row_ok, other=0.0) * 1.4426950408889634  # 1/ln 2
        lse2 = tl.where(row_ok & (lse2 != float("-inf")), lse2, float("inf"))
        if HAS_BIAS:
            bt_ptrs = bias_base + _bias_offsets_t(offs_n, offs_m, stride_bq, stride_bk)  # bias^T [BLOCK_N, BLOCK_M]
            bv = tl.load(bt_ptrs, mask=row_ok[None, :] & key_ok[:, None], other=0.0)
            x = tl.fma(st, qk_scale, bv.to(tl.float32) * 1.4426950408889634 - lse2[None, :])  # 1/ln 2
        else:
            x = tl.fma(st, qk_scale, -lse2[None, :])  # s * c - lse2: one FMA per score
        if SPAN_MODE == 2:
            x = tl.where(tl.abs(offs_n[:, None] - offs_m[None, :]) <= span, x, float("-inf"))
        col += tl.sum(tl.math.exp2(x), 1)
    # keys past the length are never admissible (their K rows were loaded as 0): 0 here
    colmass = tl.where(key_ok, col, 0.0)
    if HAS_HEAD_MASK:
        colmass = tl.where((offs_n >= 0) & (keep == 0), float("nan"), colmass)
    tl.store(ColMass + bh.to(tl.int64) * T + offs_n, colmass, mask=offs_n < T)

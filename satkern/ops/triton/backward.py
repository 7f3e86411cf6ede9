"""Triton backward of the fused op (FlashAttention-2's backward, no atomics): gradients of out, lse, entropy,
distance and colmass with respect to q, k, v and bias.

Called through ``satkern::fused_attention_triton_backward`` (and ``satkern::fused_attention_backward`` on CUDA
tensors: the cuda backend has no backward of its own), registered in ``backend.py``; the formulas are in
:mod:`satkern.ops.autograd`. Per valid row i and admissible key j, with t = s - lse and p = exp(t):

    dS_ij = p_ij * (dP_ij [j in band] + c_i - g_ent_i t_ij + g_dist_i abs(i - j) + g_col_j)
    c_i   = -rowsum(dO o O)_i + g_lse_i - g_ent_i H_i - g_dist_i dist_i - r_i,   r_i = sum_j p_ij g_col_j

``c`` is formed in torch ([B, H, T], cheap); ``r`` (only for a colmass gradient) by ``_colmass_rowsum_kernel``,
a pre-pass over the scores like FlashAttention's rowsum(dO o O). Then two kernels, every output element
written by exactly one program (deterministic):

* ``_attention_bwd_dkdv_kernel``: one program per (key block, batch*head), looping over the query blocks
  that can see it (renorm: only those near the band): dV += P'^T dO, dK += scale dS^T Q;
* ``_attention_bwd_dq_kernel``: one program per (query block, batch*head), looping over key blocks:
  dQ += scale dS K, and dS itself into a dense [B, H, T, T] float32 buffer when the bias needs a gradient
  (then summed in torch to the bias's shape: the Triton path materializes T x T for a bias gradient only).

Masked heads and blocks past the length return at once (outputs start at 0).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import _block_d, interpreting


@triton.jit
def _bwd_dot(a, b, UPCAST: tl.constexpr):
    """a @ b with fp32 accumulation; UPCAST widens both to fp32 first (the interpreter's bf16 dots are wrong)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _scores_tile(q, K, Bias, offs_m, offs_n, offs_d, row_ok, key_ok, kv_base, b, h, D, scale, span,
                 stride_bb, stride_bh, stride_bq, stride_bk, lse,
                 SPAN_MODE: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr):
    """(p, t, adm, band, k) of one [BLOCK_M, BLOCK_N] tile: p = exp(s - lse) on admissible entries (0 elsewhere),
    t = s - lse there (0 elsewhere), the admissible mask, the band mask and the K tile [BLOCK_N, BLOCK_D]."""
    k = tl.load(K + kv_base + offs_n[:, None] * D + offs_d[None, :],
                mask=key_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    s = _bwd_dot(q, tl.trans(k), UPCAST) * scale
    if HAS_BIAS:
        bptr = Bias + b * stride_bb + h * stride_bh + offs_m[:, None] * stride_bq + offs_n[None, :] * stride_bk
        s += tl.load(bptr, mask=row_ok[:, None] & key_ok[None, :], other=0.0).to(tl.float32)
    dist = offs_m[:, None] - offs_n[None, :]
    dist = tl.where(dist < 0, -dist, dist)
    band = dist <= span
    adm = row_ok[:, None] & key_ok[None, :] & (lse[:, None] > float("-inf"))
    if SPAN_MODE == 2:
        adm = adm & band
    lse_safe = tl.where(lse > float("-inf"), lse, 0.0)
    t = tl.where(adm, s - lse_safe[:, None], 0.0)
    # a -inf bias entry: t = -inf, p = 0; the clamp keeps p * t = 0
    t = tl.maximum(t, -1e30)
    p = tl.where(adm, tl.exp(t), 0.0)
    return p, t, adm, band, k, dist


@triton.jit
def _block_prologue(Lengths, HeadMask, H, T, D, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr,
                    HAS_HEAD_MASK: tl.constexpr):
    """This program's block: ``BLOCK`` rows (or keys) from ``start`` of batch*head ``program_id(1)``.
    Returns ``(bh, b, h, length, skip, offs, offs_d, ok, base, tile_mask)``: ``skip`` when the head is
    masked or the block starts past the utterance's length (nothing to compute or write); ``offs`` the
    block's indices, ``ok`` those below the length, ``base`` the [B, H, T, D] offset of this head and
    ``tile_mask`` the valid part of a ``[BLOCK, BLOCK_D]`` tile."""
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    length = tl.load(Lengths + b).to(tl.int32)
    start = tl.program_id(0) * BLOCK
    skip = start >= length
    if HAS_HEAD_MASK:
        skip = skip | (tl.load(HeadMask + bh) == 0)
    offs = start + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    ok = offs < length
    base = bh.to(tl.int64) * T * D
    tile_mask = ok[:, None] & (offs_d[None, :] < D)
    return bh, b, h, length, start, skip, offs, offs_d, ok, base, tile_mask


@triton.jit
def _loop_range(start, length, span, OWN: tl.constexpr, STEP: tl.constexpr, SPAN_MODE: tl.constexpr):
    """``(lo, hi)`` of the loop over the other axis for a block of ``OWN`` starting at ``start``: every
    valid index, or (renorm span: the only mode that skips work) the ``STEP``-aligned ones near the band."""
    lo = 0
    hi = length
    if SPAN_MODE == 2:
        lo = tl.maximum(start - span, 0) // STEP * STEP
        hi = tl.minimum(length, start + OWN + span)
    return lo, hi


@triton.jit
def _row_terms(LSE, C, GE, GD, bh, T, offs_m, row_ok, WANT_ENT: tl.constexpr, WANT_DIST: tl.constexpr):
    """``(lse, c, g_ent, g_dist)`` of a block of query rows (``c`` stands in for an absent gradient)."""
    lse = tl.load(LSE + bh * T + offs_m, mask=row_ok, other=float("-inf"))
    c = tl.load(C + bh * T + offs_m, mask=row_ok, other=0.0)
    ge = tl.load(GE + bh * T + offs_m, mask=row_ok, other=0.0) if WANT_ENT else c
    gd = tl.load(GD + bh * T + offs_m, mask=row_ok, other=0.0) if WANT_DIST else c
    return lse, c, ge, gd


@triton.jit
def _colmass_rowsum_kernel(Q, K, Bias, Lengths, HeadMask, LSE, GC, R,
                           stride_bb, stride_bh, stride_bq, stride_bk, H, T, D, scale, span,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                           SPAN_MODE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_HEAD_MASK: tl.constexpr,
                           UPCAST: tl.constexpr):
    """r_i = sum_j p_ij g_col_j for one query block (the colmass gradient's pre-pass)."""
    bh, b, h, length, start_m, skip, offs_m, offs_d, row_ok, kv_base, row_mask = _block_prologue(
        Lengths, HeadMask, H, T, D, BLOCK_M, BLOCK_D, HAS_HEAD_MASK)
    if skip:
        return
    q = tl.load(Q + kv_base + offs_m[:, None] * D + offs_d[None, :], mask=row_mask, other=0.0)
    lse = tl.load(LSE + bh * T + offs_m, mask=row_ok, other=float("-inf"))
    lo, hi = _loop_range(start_m, length, span, BLOCK_M, BLOCK_N, SPAN_MODE)
    r = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < length
        p, t, adm, band, k, dist = _scores_tile(q, K, Bias, offs_m, offs_n, offs_d, row_ok, key_ok, kv_base, b, h, D,
                                                scale, span, stride_bb, stride_bh, stride_bq, stride_bk, lse,
                                                SPAN_MODE, HAS_BIAS, UPCAST)
        gc = tl.load(GC + bh * T + offs_n, mask=key_ok, other=0.0)
        r += tl.sum(p * gc[None, :], axis=1)
    tl.store(R + bh * T + offs_m, r, mask=row_ok)


@triton.jit
def _ds_tile(p, t, band, dist, do, v, c, ge, gd, gc,
             SPAN_MODE: tl.constexpr, HAS_OUT_GRAD: tl.constexpr, WANT_ENT: tl.constexpr,
             WANT_DIST: tl.constexpr, WANT_COL: tl.constexpr, UPCAST: tl.constexpr):
    f = tl.zeros(p.shape, dtype=tl.float32) + c[:, None]
    if HAS_OUT_GRAD:
        dp = _bwd_dot(do, tl.trans(v), UPCAST)
        if SPAN_MODE == 1:
            dp = tl.where(band, dp, 0.0)
        f += dp
    if WANT_ENT:
        f -= ge[:, None] * t
    if WANT_DIST:
        f += gd[:, None] * dist.to(tl.float32)
    if WANT_COL:
        f += gc[None, :]
    return p * f


@triton.jit
def _attention_bwd_dkdv_kernel(Q, K, V, DO, Bias, Lengths, HeadMask, LSE, C, GE, GD, GC, DK, DV,
                               stride_bb, stride_bh, stride_bq, stride_bk, H, T, D, scale, span,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                               SPAN_MODE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_HEAD_MASK: tl.constexpr,
                               HAS_OUT_GRAD: tl.constexpr, WANT_ENT: tl.constexpr, WANT_DIST: tl.constexpr,
                               WANT_COL: tl.constexpr, UPCAST: tl.constexpr):
    bh, b, h, length, start_n, skip, offs_n, offs_d, key_ok, kv_base, tile_mask = _block_prologue(
        Lengths, HeadMask, H, T, D, BLOCK_N, BLOCK_D, HAS_HEAD_MASK)
    if skip:
        return
    v = tl.load(V + kv_base + offs_n[:, None] * D + offs_d[None, :], mask=tile_mask, other=0.0)
    gc = tl.load(GC + bh * T + offs_n, mask=key_ok, other=0.0) if WANT_COL else tl.zeros([BLOCK_N], tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    lo, hi = _loop_range(start_n, length, span, BLOCK_N, BLOCK_M, SPAN_MODE)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < length
        row_mask = row_ok[:, None] & (offs_d[None, :] < D)
        q = tl.load(Q + kv_base + offs_m[:, None] * D + offs_d[None, :], mask=row_mask, other=0.0)
        lse, c, ge, gd = _row_terms(LSE, C, GE, GD, bh, T, offs_m, row_ok, WANT_ENT, WANT_DIST)
        do = tl.load(DO + kv_base + offs_m[:, None] * D + offs_d[None, :], mask=row_mask, other=0.0)
        p, t, adm, band, k, dist = _scores_tile(q, K, Bias, offs_m, offs_n, offs_d, row_ok, key_ok, kv_base, b, h, D,
                                                scale, span, stride_bb, stride_bh, stride_bq, stride_bk, lse,
                                                SPAN_MODE, HAS_BIAS, UPCAST)
        ds = _ds_tile(p, t, band, dist, do, v, c, ge, gd, gc, SPAN_MODE, HAS_OUT_GRAD, WANT_ENT, WANT_DIST, WANT_COL,
                      UPCAST)
        if HAS_OUT_GRAD:
            p_out = p
            if SPAN_MODE == 1:
                p_out = tl.where(band, p, 0.0)
            dv += _bwd_dot(tl.trans(p_out), do.to(tl.float32), True)
        dk += _bwd_dot(tl.trans(ds), q.to(tl.float32), True)
    tl.store(DK + kv_base + offs_n[:, None] * D + offs_d[None, :], dk * scale, mask=tile_mask)
    tl.store(DV + kv_base + offs_n[:, None] * D + offs_d[None, :], dv, mask=tile_mask)


@triton.jit
def _attention_bwd_dq_kernel(Q, K, V, DO, Bias, Lengths, HeadMask, LSE, C, GE, GD, GC, DQ, DBias,
                             stride_bb, stride_bh, stride_bq, stride_bk, H, T, D, scale, span,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                             SPAN_MODE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_HEAD_MASK: tl.constexpr,
                             HAS_OUT_GRAD: tl.constexpr, WANT_ENT: tl.constexpr, WANT_DIST: tl.constexpr,
                             WANT_COL: tl.constexpr, WANT_DBIAS: tl.constexpr, UPCAST: tl.constexpr):
    bh, b, h, length, start_m, skip, offs_m, offs_d, row_ok, kv_base, row_mask = _block_prologue(
        Lengths, HeadMask, H, T, D, BLOCK_M, BLOCK_D, HAS_HEAD_MASK)
    if skip:
        return
    q = tl.load(Q + kv_base + offs_m[:, None] * D + offs_d[None, :], mask=row_mask, other=0.0)
    do = tl.load(DO + kv_base + offs_m[:, None] * D + offs_d[None, :], mask=row_mask, other=0.0)
    lse, c, ge, gd = _row_terms(LSE, C, GE, GD, bh, T, offs_m, row_ok, WANT_ENT, WANT_DIST)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, hi = _loop_range(start_m, length, span, BLOCK_M, BLOCK_N, SPAN_MODE)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < length
        p, t, adm, band, k, dist = _scores_tile(q, K, Bias, offs_m, offs_n, offs_d, row_ok, key_ok, kv_base, b, h, D,
                                                scale, span, stride_bb, stride_bh, stride_bq, stride_bk, lse,
                                                SPAN_MODE, HAS_BIAS, UPCAST)
        v = tl.load(V + kv_base + offs_n[:, None] * D + offs_d[None, :], mask=key_ok[:, None] & (offs_d[None, :] < D),
                    other=0.0)
        gc = tl.load(GC + bh * T + offs_n, mask=key_ok, other=0.0) if WANT_COL else c
        ds = _ds_tile(p, t, band, dist, do, v, c, ge, gd, gc, SPAN_MODE, HAS_OUT_GRAD, WANT_ENT, WANT_DIST, WANT_COL,
                      UPCAST)
        dq += _bwd_dot(ds, k.to(tl.float32), True)
        if WANT_DBIAS:
            dptr = DBias + bh.to(tl.int64) * T * T + offs_m[:, None] * T + offs_n[None, :]
            tl.store(dptr, ds, mask=row_ok[:, None] & key_ok[None, :])
    tl.store(DQ + kv_base + offs_m[:, None] * D + offs_d[None, :], dq * scale, mask=row_mask)


def fused_attention_backward(grad_out, grad_lse, grad_entropy, grad_distance, grad_colmass, q, k, v, out, lse,
                             entropy, distance, lengths, bias, head_mask, scale, span, renorm, want_grad_bias):
    """The Triton implementation of ``satkern::fused_attention_triton_backward`` (schema in ``schema.py``)."""
    B, H, T, D = q.shape
    if v.shape[-1] != D:
        raise ValueError(f"satkern: the Triton backward needs v's head dim equal to q's ({D}); got {v.shape[-1]}")
    dev = q.device
    f32 = torch.float32

    def given(g):
        return g is not None and g.numel() > 0

    has_out, want_ent, want_dist, want_col = given(grad_out), given(grad_entropy), given(grad_distance), given(grad_colmass)
    qc, kc, vc = (x.contiguous() for x in (q, k, v))
    lse32 = lse.to(f32).contiguous()
    c = torch.zeros(B, H, T, dtype=f32, device=dev)
    if has_out:
        c -= (grad_out.to(f32) * out.to(f32)).sum(-1)
    if given(grad_lse):
        c += grad_lse.to(f32)
    ge = grad_entropy.to(f32).contiguous() if want_ent else c
    gd = grad_distance.to(f32).contiguous() if want_dist else c
    gc = grad_colmass.to(f32).contiguous() if want_col else c
    if want_ent:
        c -= ge * entropy.to(f32)
    if want_dist:
        c -= gd * distance.to(f32)
    do = grad_out.to(q.dtype).contiguous() if has_out else qc
    b_exp = None if bias is None else bias.expand(B, H, T, T)
    bstr = (0, 0, 0, 0) if b_exp is None else tuple(b_exp.stride())
    hm = head_mask.contiguous() if head_mask is not None else qc
    lengths = lengths.to(device=dev, dtype=torch.int64).contiguous()
    mode = 0 if span < 0 else (2 if renorm else 1)
    span_v = int(span) if span >= 0 else T
    upcast = interpreting() or q.dtype == torch.float32
    block = 32 if interpreting() else 64
    meta = dict(BLOCK_M=block, BLOCK_N=block, BLOCK_D=_block_d(D), SPAN_MODE=mode,
                HAS_BIAS=bias is not None, HAS_HEAD_MASK=head_mask is not None, UPCAST=upcast)
    common = (bstr[0], bstr[1], bstr[2], bstr[3], H, T, D, float(scale), span_v)
    grid = (triton.cdiv(max(T, 1), block), B * H)
    if B * H == 0 or T == 0:
        zb = torch.zeros(bias.shape, dtype=bias.dtype, device=dev) if want_grad_bias else q.new_empty((0,))
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), zb
    biasp = qc if bias is None else b_exp
    if want_col:
        r = torch.zeros(B, H, T, dtype=f32, device=dev)
        _colmass_rowsum_kernel[grid](qc, kc, biasp, lengths, hm, lse32, gc, r, *common, **meta)
        c -= r
    c = c.contiguous()
    flags = dict(HAS_OUT_GRAD=has_out, WANT_ENT=want_ent, WANT_DIST=want_dist, WANT_COL=want_col)
    dk = torch.zeros(B, H, T, D, dtype=f32, device=dev)
    dv = torch.zeros(B, H, T, D, dtype=f32, device=dev)
    dq = torch.zeros(B, H, T, D, dtype=f32, device=dev)
    dbias = torch.zeros(B, H, T, T, dtype=f32, device=dev) if want_grad_bias else dq
    _attention_bwd_dkdv_kernel[grid](qc, kc, vc, do, biasp, lengths, hm, lse32, c, ge, gd, gc, dk, dv, *common,
                                     **meta, **flags)
    _attention_bwd_dq_kernel[grid](qc, kc, vc, do, biasp, lengths, hm, lse32, c, ge, gd, gc, dq, dbias, *common,
                                   **meta, **flags, WANT_DBIAS=bool(want_grad_bias))
    grad_bias = dbias.sum_to_size(bias.shape).to(bias.dtype) if want_grad_bias else q.new_empty((0,))
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), grad_bias

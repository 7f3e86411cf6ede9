"""Host launchers of the triton backend: ``_attention_fwd`` (pass 1) and ``_colmass_fwd`` (pass 2).

Nothing here touches the GPU at import time: the autotuning configs are a fixed list for Hopper-class
GPUs (H100/H200; configs that do not fit a smaller GPU fail to compile there and the autotuner skips
them; the 64 x 32 and 32 x 32 tiles fit any GPU Triton supports). Under ``TRITON_INTERPRET=1`` (CPU
tensors, used by CI) the autotuner is bypassed and one small config runs, so the interpreter never
benchmarks.

Test hooks (never on by default):

* :func:`poison_outputs` (or ``SATKERN_TRITON_POISON=<float or nan>`` in the environment) fills every
  output with a value before the kernels run, so an element the kernels forget to write shows up;
* :func:`interpreter_blocks` sets the block sizes used under the interpreter (to exercise several
  blocks with small ``T``);
* :func:`forced_config` runs one fixed config per pass instead of autotuning (GPU tests).
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional, Tuple

import torch
import triton

from . import kernels

# Pass 1: (BLOCK_M, BLOCK_N, num_warps, num_stages). BLOCK_M 128 x BLOCK_N 64-128 with 8 warps is the
# FlashAttention-2 sweet spot on H100/H200 for D = 64..128; 64 x 64 / 64 x 32 are the fallbacks for
# D = 128 with statistics (register pressure) and for GPUs with less shared memory.
# Checked offline for sm_90 with ``python -m satkern.ops.triton.aot_check --all`` (registers, spills, shared
# memory): BLOCK_M 128 needs 8 warps (4 warps spill even for D=64); 128 x 128 x D=128 uses 224 KiB of
# shared memory (fits H100/H200 only; the autotuner skips it where it does not fit).
# float32 inputs use exact fp32 ("ieee") dots, which run on CUDA cores and spill above 32 x 64 tiles: the
# last two configs are for them only (and the only ones they get).
_FWD_CONFIGS = [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 4), (128, 32, 8, 4),
                (64, 64, 4, 3), (64, 64, 4, 4), (64, 32, 4, 2), (32, 64, 4, 3), (32, 32, 4, 2)]
# Pass 2 (BLOCK_M = query rows per loop step, BLOCK_N = key columns owned by a program).
_COL_CONFIGS = [(64, 128, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 64, 4, 3), (32, 64, 4, 2),
                (32, 32, 4, 2)]

_FWD_KEY = ["T_BUCKET", "BLOCK_D", "BLOCK_L", "SPAN_MODE", "HAS_BIAS", "HAS_HEAD_MASK", "WANT_ENTROPY",
            "WANT_DISTANCE", "WANT_MAXWEIGHT", "WANT_LABELS", "DOT_PRECISION", "FUSED_SCALE"]
_COL_KEY = ["T_BUCKET", "BLOCK_D", "SPAN_MODE", "HAS_BIAS", "HAS_HEAD_MASK", "DOT_PRECISION"]


def _configs(table):
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in table]


def _prune_fwd(configs, named_args, **kwargs):
    """Drop tiles that cannot pay off (wider than a short sequence) or that spill on sm_90 (labels with big
    tiles or D=128; fp32 inputs get the 32-row tiles only, 16-bit inputs never do)."""
    tb = named_args["T_BUCKET"]
    bd = kwargs.get("BLOCK_D", 64)
    labels = kwargs.get("WANT_LABELS", False)

    def fits(c):
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        if bm > max(tb, 64) or bn > max(tb, 32):
            return False
        if labels and (bm * bn > 128 * 64 or (bd >= 128 and bm > 64)):  # label accumulator: spills
            return False
        if bd >= 256 and (bm > 64 or bn > 64):  # D = 129..256: a [BM, 256] fp32 accumulator; 64 x 64 at most
            return False
        if (kwargs.get("DOT_PRECISION") == "ieee") != (bm == 32):  # fp32 FMA dots: 32-row tiles only
            return False
        return True

    keep = [c for c in configs if fits(c)]
    return keep or configs[-1:]


def _prune_col(configs, named_args, **kwargs):
    tb = named_args["T_BUCKET"]
    ieee = kwargs.get("DOT_PRECISION") == "ieee"
    wide = kwargs.get("BLOCK_D", 64) >= 256  # the K block [BLOCK_N, 256] stays in registers: 64 keys at most
    keep = [c for c in configs if c.kwargs["BLOCK_N"] <= max(tb, 64) and c.kwargs["BLOCK_M"] <= max(tb, 32)
            and not (ieee and c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] > 32 * 64)
            and not (wide and c.kwargs["BLOCK_N"] > 64)]
    return keep or configs[-1:]


_attention_fwd_tuned = triton.autotune(configs=_configs(_FWD_CONFIGS), key=_FWD_KEY,
                                       prune_configs_by={"early_config_prune": _prune_fwd})(
    kernels._attention_fwd_kernel)
_colmass_tuned = triton.autotune(configs=_configs(_COL_CONFIGS), key=_COL_KEY,
                                 prune_configs_by={"early_config_prune": _prune_col})(kernels._colmass_kernel)

# ---------------------------------------------------------------- test hooks
_INTERPRET_BLOCKS = (16, 16)  # (BLOCK_M, BLOCK_N) under TRITON_INTERPRET=1
_POISON: Optional[float] = None


def interpreting() -> bool:
    """True when the kernels were built by the Triton interpreter (TRITON_INTERPRET=1 at import)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - very old triton
        return False
    return isinstance(kernels._attention_fwd_kernel, InterpretedFunction)


@contextlib.contextmanager
def interpreter_blocks(block_m: int, block_n: int):
    """Block sizes used under the interpreter inside the ``with`` (powers of two, >= 16)."""
    global _INTERPRET_BLOCKS
    old, _INTERPRET_BLOCKS = _INTERPRET_BLOCKS, (int(block_m), int(block_n))
    try:
        yield
    finally:
        _INTERPRET_BLOCKS = old


@contextlib.contextmanager
def poison_outputs(value: float = float("nan")):
    """Fill every output with ``value`` before the kernels write it (tests: unwritten elements show)."""
    global _POISON
    old, _POISON = _POISON, float(value)
    try:
        yield
    finally:
        _POISON = old


_FORCED = {"fwd": None, "col": None}


@contextlib.contextmanager
def forced_config(fwd: Optional[Tuple[int, int, int, int]] = None, col: Optional[Tuple[int, int, int, int]] = None):
    """Run one fixed (BLOCK_M, BLOCK_N, num_warps, num_stages) per pass instead of autotuning (GPU tests:
    bounds the number of compiled variants; also ``SATKERN_TRITON_FWD_CONFIG`` / ``SATKERN_TRITON_COL_CONFIG``
    = "128,64,8,3" in the environment)."""
    old = dict(_FORCED)
    _FORCED.update(fwd=fwd, col=col)
    try:
        yield
    finally:
        _FORCED.update(old)


def _forced(which: str):
    if _FORCED[which] is not None:
        return tuple(_FORCED[which])
    env = os.environ.get("SATKERN_TRITON_FWD_CONFIG" if which == "fwd" else "SATKERN_TRITON_COL_CONFIG")
    if env:
        bm, bn, w, st = (int(x) for x in env.split(","))
        return bm, bn, w, st
    return None


def _poison_value() -> Optional[float]:
    if _POISON is not None:
        return _POISON
    env = os.environ.get("SATKERN_TRITON_POISON")
    return float(env) if env else None


def _alloc(shape, dtype, device) -> torch.Tensor:
    value = _poison_value()
    if value is None:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.full(shape, value, dtype=dtype, device=device)


# ---------------------------------------------------------------- launchers
def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _block_d(D: int) -> int:
    """The head-dim tile: the next power of two, at least 16 (tl.dot's minimum). The kernels load the
    head dim unmasked only when ``D`` fills it (``EVEN_D = D == _block_d(D)``): a D of 1, 2, 4 or 8 is a
    power of two but not a full tile, and unmasked loads of it read 16 values per row, past the row and,
    at the tensor's end, past its memory (NaN there made whole rows NaN)."""
    return max(16, _next_pow2(D))


def _span_mode(span: int, renorm: bool, T: int) -> Tuple[int, int]:
    """(SPAN_MODE, span): 0 = no span, 1 = zero, 2 = renorm. A span >= T - 1 excludes nothing."""
    if span < 0 or span >= T - 1:
        return 0, 0
    return (2 if renorm else 1), int(span)


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 inputs: exact fp32 products ("ieee"); TF32 would exceed 2x PyTorch's fp32 error.
    return "ieee" if dtype == torch.float32 else "tf32"


def _upcast_dot(dtype: torch.dtype) -> bool:
    # the interpreter's bf16 dot reads raw bits; widen to fp32 there (see kernels._dot). False on GPU.
    return dtype == torch.bfloat16 and interpreting()


def _bias_strides(bias):
    return (0, 0, 0, 0) if bias is None else tuple(bias.stride())


def _attention_fwd(q, k, v, lengths, bias, head_mask, label_weights, scale: float, span: int, renorm: bool,
                   want_entropy: bool, want_distance: bool, want_maxweight: bool, *, out=None):
    """Pass 1. Returns (out, lse, entropy, distance, maxweight, label_mass); statistics not asked for are
    empty ``[0]`` float32 tensors. ``head_mask`` int8/bool [B,H] contiguous or None; ``out`` optional
    preallocated [B,H,T,D] in q's dtype (any strides)."""
    B, H, T, D = q.shape
    dev = q.device
    f32 = torch.float32
    none = torch.empty((0,), dtype=f32, device=dev)
    L = 0 if label_weights is None else int(label_weights.shape[-1])
    if out is None:
        out = _alloc((B, H, T, D), q.dtype, dev)
    lse = _alloc((B, H, T), f32, dev)
    ent = _alloc((B, H, T), f32, dev) if want_entropy else none
    dist = _alloc((B, H, T), f32, dev) if want_distance else none.clone()
    mw = _alloc((B, H, T), f32, dev) if want_maxweight else none.clone()
    lm = none.clone() if label_weights is None else _alloc((B, H, T, L), f32, dev)
    if B * H * T == 0:
        return out, lse, ent, dist, mw, lm

    mode, span = _span_mode(span, renorm, T)
    want_labels = L > 0
    W = label_weights if want_labels else q
    w_strides = tuple(label_weights.stride()) if want_labels else (0, 0, 0)
    args = (q, k, v, lengths, q if bias is None else bias, q if head_mask is None else head_mask, W,
            out, lse, ent if want_entropy else lse, dist if want_distance else lse,
            mw if want_maxweight else lse, lm if want_labels else lse,
            *q.stride(), *k.stride(), *v.stride(), *_bias_strides(bias), *w_strides, *out.stride(),
            H, T, D, max(L, 1), float(scale) * kernels.LOG2E, span, _next_pow2(max(T, 16)))
    meta = dict(BLOCK_D=_block_d(D), BLOCK_L=max(16, _next_pow2(L)), SPAN_MODE=mode,
                HAS_BIAS=bias is not None, HAS_HEAD_MASK=head_mask is not None, WANT_ENTROPY=bool(want_entropy),
                WANT_DISTANCE=bool(want_distance), WANT_MAXWEIGHT=bool(want_maxweight), WANT_LABELS=want_labels,
                EVEN_D=D == _block_d(D), DOT_PRECISION=_dot_precision(q.dtype), UPCAST_DOT=_upcast_dot(q.dtype),
                FUSED_SCALE=bias is None and float(scale) > 0)
    _launch("fwd", kernels._attention_fwd_kernel, _attention_fwd_tuned, "BLOCK_M", B * H, T, args, meta)
    return out, lse, ent, dist, mw, lm


def _launch(which: str, kernel, tuned, block_axis: str, BH: int, T: int, args, meta) -> None:
    """Run a pass on a grid of ``cdiv(T, block) * BH`` programs, ``block`` = the ``block_axis`` tile size
    (``"BLOCK_M"``: query blocks, pass 1; ``"BLOCK_N"``: key blocks, pass 2): small fixed tiles under the
    interpreter, a config forced by the environment (:func:`_forced`), else the autotuned kernel."""
    def grid(blocks):
        return (triton.cdiv(T, blocks[block_axis]) * BH,)

    if interpreting():
        bm, bn = _INTERPRET_BLOCKS
        kernel[grid({"BLOCK_M": bm, "BLOCK_N": bn})](*args, BLOCK_M=bm, BLOCK_N=bn, **meta)
    elif _forced(which) is not None:
        bm, bn, w, st = _forced(which)
        kernel[grid({"BLOCK_M": bm, "BLOCK_N": bn})](*args, BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=st,
                                                     **meta)
    else:
        tuned[grid](*args, **meta)


def _colmass_fwd(q, k, lengths, bias, head_mask, lse, scale: float, span: int, renorm: bool):
    """Pass 2. ``lse`` is pass 1's [B,H,T] float32 (contiguous). Returns colmass [B,H,T] float32."""
    B, H, T, D = q.shape
    col = _alloc((B, H, T), torch.float32, q.device)
    if B * H * T == 0:
        return col
    mode, span = _span_mode(span, renorm, T)
    args = (q, k, lengths, q if bias is None else bias, q if head_mask is None else head_mask, lse, col,
            *q.stride(), *k.stride(), *_bias_strides(bias),
            H, T, D, float(scale) * kernels.LOG2E, span, _next_pow2(max(T, 16)))
    meta = dict(BLOCK_D=_block_d(D), SPAN_MODE=mode, HAS_BIAS=bias is not None,
                HAS_HEAD_MASK=head_mask is not None, EVEN_D=D == _block_d(D),
                DOT_PRECISION=_dot_precision(q.dtype), UPCAST_DOT=_upcast_dot(q.dtype))
    _launch("col", kernels._colmass_kernel, _colmass_tuned, "BLOCK_N", B * H, T, args, meta)
    return col


def fused_attention_forward(q, k, v, lengths, bias, head_mask, label_weights, scale, span, renorm,
                            want_entropy, want_distance, want_colmass, want_maxweight):
    """The ``satkern::fused_attention_triton`` op: both passes, outputs in the schema's order."""
    f32 = torch.float32
    if head_mask is not None:
        head_mask = head_mask.to(torch.int8).contiguous()
    lengths = lengths.to(torch.int64).contiguous()
    out, lse, ent, dist, mw, lm = _attention_fwd(q, k, v, lengths, bias, head_mask, label_weights, scale, span,
                                                 renorm, want_entropy, want_distance, want_maxweight)
    if want_colmass:
        col = _colmass_fwd(q, k, lengths, bias, head_mask, lse, scale, span, renorm)
    else:
        col = torch.empty((0,), dtype=f32, device=q.device)
    return out, lse, ent, dist, col, mw, lm

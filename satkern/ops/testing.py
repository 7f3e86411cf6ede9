"""Helpers the backend test suites share: the plain-PyTorch baseline and the tolerance rule.

Rule (flash-attention's tests): a backend's error against the float64 reference must be at most
2x the error of plain PyTorch computing the same quantities eagerly, plus a small floor (for the fields in
``scaled`` relative to the quantity's magnitude ``max(1, max |reference|)``, absolute for the others).
NaN / +inf / -inf must sit exactly where the reference has them.

What "plain PyTorch" computes: the scores ``q k^T`` and ``out = A v`` (and ``label_mass = A W``) in the input
dtype, as a model would (the map by :func:`satkern.ops.maps.masked_softmax`, the op's row conventions, in
that dtype); ``lse`` and the statistics (entropy, distance, colmass, maxweight) in float32 from
those scores (for 16-bit inputs: the bf16/fp16 scores widened to float32, softmax in float32), because
every backend emits them in float32 from float32-accumulated scores. The floor follows the same split:
``out`` and ``label_mass`` get the input dtype's floor, the float32 fields float32's. (Statistics computed in
bf16, as before, let a 1% error in entropy or distance pass the bf16 bound.)

Used by tests/test_triton_interpret.py, tests/gpu/test_triton_gpu.py, tests/gpu/test_cuda_gpu.py
(:func:`torch_baseline`, :func:`compare`, :func:`failures`) and tests/test_cpu_backend.py
(:func:`torch_baseline`; it has its own comparison, which also checks the padded / masked conventions).
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import torch

from .contract import AttentionCall, AttentionResult
from .maps import frame_masks, masked_softmax, output_weights, scores
from .reference import reference_attention

FIELDS = ("out", "lse", "entropy", "distance", "colmass", "maxweight", "label_mass")
# default floor (the triton suites'), relative to max(1, max |reference|): fp32 ~ 100 ulp; half types ~ a few
# ulp of their own epsilon
FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
IN_DTYPE_FIELDS = ("out", "label_mass")  # computed in the input dtype; the other fields are float32


def torch_baseline(call: AttentionCall, *, stats_dtype: Optional[torch.dtype] = None,
                   zero_masked_heads: bool = False) -> AttentionResult:
    """Plain eager PyTorch: scores in ``call.q.dtype``; out, label_mass from A in that dtype.

    ``lse`` and the statistics are computed in ``stats_dtype`` (default: float32 for 16-bit inputs, else the
    input dtype) from the scores widened to it: their own softmax in ``stats_dtype``, never A rounded to the
    input dtype. ``zero_masked_heads``: ``out`` is 0 on the heads ``call.head_mask`` drops (the contract's
    value); otherwise the baseline ignores ``head_mask``. Padded query rows are 0 everywhere.
    """
    dt = call.q.dtype
    if stats_dtype is None:
        stats_dtype = torch.float32 if dt in (torch.float16, torch.bfloat16) else dt
    sd = stats_dtype
    B, H, T, D = call.shape
    dev = call.q.device
    s = scores(call.q, call.k, call.scale, call.bias)  # in the input dtype, as a model computes them
    valid, band = frame_masks(call.lengths, T, call.span)
    adm = valid[:, None, None, :]
    if band is not None and call.span_mode == "renorm":
        adm = adm & band
    row_valid = valid[:, None, :, None]
    A, lse, _ = masked_softmax(s, adm, row_valid)
    As = A
    if sd != dt:  # the scores widened, their own softmax in the stats dtype
        As, lse, _ = masked_softmax(s.to(sd), adm, row_valid)
    idx = torch.arange(T, device=dev)
    vv = call.v.masked_fill(~valid[:, None, :, None], 0.0)
    out = torch.matmul(output_weights(A, call), vv)
    if zero_masked_heads and call.head_mask is not None:
        out = out * call.head_mask[:, :, None, None].to(dt)
    res = AttentionResult(out=out, lse=lse, lengths=call.lengths, backend="torch")
    if call.wants("entropy"):
        res.entropy = -(As * torch.log(torch.where(As > 0, As, torch.ones((), dtype=As.dtype)))).sum(-1)  # xlogy values, finite grads
    if call.wants("distance"):
        res.distance = (As * (idx[:, None] - idx[None, :]).abs().to(sd)).sum(-1)
    if call.wants("maxweight"):
        res.maxweight = As.amax(-1)
    if call.wants("colmass"):
        res.colmass = As.sum(-2)
    if call.label_weights is not None:
        res.label_mass = torch.matmul(A, call.label_weights.to(dt)[:, None]).to(sd)
    return res


def compare(got: AttentionResult, call: AttentionCall, ref: Optional[AttentionResult] = None,
            base: Optional[AttentionResult] = None, *, floor: Optional[Dict[torch.dtype, float]] = None,
            scaled: Iterable[str] = FIELDS) -> Dict[str, dict]:
    """Per field: error, PyTorch-baseline error, bound, and ``ok``; plus NaN/inf pattern, shape and dtype checks.

    ``call`` is the low-precision call; the reference (float64) and the baseline (:func:`torch_baseline`)
    are computed from it when not given. ``floor``: per dtype (default :data:`FLOOR`), the input dtype's for
    :data:`IN_DTYPE_FIELDS`, float32's for the float32 fields; it is relative to ``max(1, max |reference|)``
    for the fields in ``scaled`` (default all), absolute for the others.
    Expected dtypes: ``out`` in the input dtype, everything else float32.
    """
    if ref is None:
        ref = reference_attention(call)
    if base is None:
        base = torch_baseline(call)
    floors = FLOOR if floor is None else floor
    scaled = set(scaled)
    report = {}
    for name in FIELDS:
        r = getattr(ref, name)
        g = getattr(got, name)
        if r is None:
            report[name] = {"ok": g is None, "why": "" if g is None else "returned but not asked for"}
            continue
        if g is None:
            report[name] = {"ok": False, "why": "missing"}
            continue
        if tuple(g.shape) != tuple(r.shape):
            report[name] = {"ok": False, "why": f"shape {tuple(g.shape)} != {tuple(r.shape)}"}
            continue
        want_dtype = call.q.dtype if name == "out" else torch.float32
        if g.dtype != want_dtype:
            report[name] = {"ok": False, "why": f"dtype {g.dtype} != {want_dtype}"}
            continue
        g64, r64 = g.double().cpu(), r.double().cpu()
        b = getattr(base, name)
        b64 = b.double().cpu() if b is not None else r64
        pattern = [("nan", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)]
        bad = [f"{lab} at {int((f(g64) != f(r64)).sum())} places" for lab, f in pattern
               if not torch.equal(f(g64), f(r64))]
        fin = torch.isfinite(r64)
        err = float((g64[fin] - r64[fin]).abs().max()) if fin.any() else 0.0
        bfin = fin & torch.isfinite(b64)
        berr = float((b64[bfin] - r64[bfin]).abs().max()) if bfin.any() else 0.0
        scale = max(1.0, float(r64[fin].abs().max())) if fin.any() and name in scaled else 1.0
        floor = floors[call.q.dtype if name in IN_DTYPE_FIELDS else torch.float32]
        bound = 2.0 * berr + floor * scale
        ok = not bad and err <= bound and err == err
        why = "; ".join(bad)
        if not bad and not ok:
            worst = int((g64 - r64).abs().masked_fill(~fin, 0).argmax())
            why = (f"error {err:.3e} > bound {bound:.3e}; worst at flat index {worst}: "
                   f"got {g64.flatten()[worst].item()}, ref {r64.flatten()[worst].item()}")
        report[name] = {"ok": ok, "err": err, "torch_err": berr, "bound": bound, "why": why}
    return report


def failures(report: Dict[str, dict]) -> str:
    """Empty when every field passed, else one line per failing field with the worst error."""
    lines = []
    for name, r in report.items():
        if not r["ok"]:
            extra = f" (err {r['err']:.3e}, torch {r['torch_err']:.3e}, bound {r['bound']:.3e})" if "err" in r else ""
            lines.append(f"{name}: {r['why']}{extra}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- gradients
GRAD_NAMES = ("q", "k", "v", "bias")


def grad_inputs(seed: int, B: int, H: int, T: int, D: int, dtype: torch.dtype = torch.float32, bias_shape=None):
    """Fresh random leaf tensors ``q, k, v`` [B, H, T, D] (and a ``bias`` of ``bias_shape``, else None) that
    require grad: drawn in float64 from ``seed``, then cast to ``dtype``, so every dtype sees the same values."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for _ in range(3))
    bias = None
    if bias_shape is not None:
        bias = torch.randn(*bias_shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    return q, k, v, bias


def grads_of(res: AttentionResult, weights: Dict[str, torch.Tensor], q, k, v, bias=None) -> Dict[str, torch.Tensor]:
    """Gradients of ``sum_f sum(weights[f] * res.f)`` (float64 weights, fields of ``res``; NaN entries of a
    field, i.e. masked heads, count as 0) with respect to q, k, v and, when given, bias."""
    loss = 0.0
    for name, w in weights.items():
        loss = loss + (getattr(res, name).double().nan_to_num() * w).sum()
    inputs = [x for x in (q, k, v, bias) if x is not None]
    got = torch.autograd.grad(loss, inputs, allow_unused=True)
    got = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, got)]
    return dict(zip(GRAD_NAMES, got))


def grad_failures(got: Dict[str, torch.Tensor], ref: Dict[str, torch.Tensor], base: Dict[str, torch.Tensor],
                  dtype: torch.dtype, *, floor: Optional[Dict[torch.dtype, float]] = None) -> str:
    """The tolerance rule of :func:`compare` applied to gradients: for each of q, k, v, bias the error
    against the float64 reference at most 2x plain PyTorch's (``base``, same dtype) plus the floor relative
    to ``max(1, max |reference|)``; shapes, dtypes (the input's) and the NaN pattern must match. Empty when
    all pass, else one line per failing gradient."""
    fl = (FLOOR if floor is None else floor)[dtype]
    lines = []
    for name in GRAD_NAMES:
        if name not in ref:
            continue
        g, r, b = got[name], ref[name], base[name]
        if tuple(g.shape) != tuple(r.shape) or g.dtype != dtype:
            lines.append(f"grad {name}: shape {tuple(g.shape)} dtype {g.dtype}, want {tuple(r.shape)} {dtype}")
            continue
        g64, r64, b64 = g.double().cpu(), r.double().cpu(), b.double().cpu()
        if not torch.equal(torch.isnan(g64), torch.isnan(r64)):
            lines.append(f"grad {name}: NaN at {int((torch.isnan(g64) != torch.isnan(r64)).sum())} places")
            continue
        fin = torch.isfinite(r64)
        err = float((g64[fin] - r64[fin]).abs().max()) if fin.any() else 0.0
        bfin = fin & torch.isfinite(b64)
        berr = float((b64[bfin] - r64[bfin]).abs().max()) if bfin.any() else 0.0
        scale = max(1.0, float(r64[fin].abs().max())) if fin.any() else 1.0
        bound = 2.0 * berr + fl * scale
        if not err <= bound:
            worst = int((g64 - r64).abs().masked_fill(~fin, 0).argmax())
            lines.append(f"grad {name}: error {err:.3e} > bound {bound:.3e} (torch {berr:.3e}); worst at flat index "
                         f"{worst}: got {g64.flatten()[worst].item()}, ref {r64.flatten()[worst].item()}")
    return "\n".join(lines)


def compiler_missing() -> Optional[str]:
    """Why ``torch.compile`` cannot generate CPU code here (no C++ compiler), or None: a skip reason."""
    import os
    import shutil

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None and shutil.which("g++") is None:
        return f"no C++ compiler ({cxx!r} or g++) for inductor's CPU code generation"
    return None

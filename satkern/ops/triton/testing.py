"""Helpers the triton tests (interpreter and GPU) share: plain-PyTorch baseline and the tolerance rule.

Rule (flash-attention's): the kernel's error against the float64 reference must be at most 2x the error
of plain PyTorch computing the same quantities in the same dtype, plus a small floor relative to the
quantity's magnitude. NaN / +inf / -inf must sit exactly where the reference has them.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..contract import AttentionCall, AttentionResult
from ..reference import reference_attention

FIELDS = ("out", "lse", "entropy", "distance", "colmass", "maxweight", "label_mass")
# floor, relative to max(1, max |reference|): fp32 ~ 100 ulp; half types ~ a few ulp of their own epsilon
FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def torch_baseline(call: AttentionCall) -> AttentionResult:
    """Plain eager PyTorch in ``call.q.dtype``: materialize scores and A, statistics from A, same dtype."""
    dt = call.q.dtype
    B, H, T, D = call.shape
    dev = call.q.device
    s = torch.matmul(call.q, call.k.transpose(-1, -2)) * call.scale
    if call.bias is not None:
        s = s + call.bias.to(dt)
    idx = torch.arange(T, device=dev)
    valid = idx[None, :] < call.lengths[:, None]
    adm = valid[:, None, None, :].expand(B, H, T, T)
    band = None
    if call.span is not None:
        band = (idx[:, None] - idx[None, :]).abs() <= call.span
        if call.span_mode == "renorm":
            adm = adm & band
    s = s.masked_fill(~adm, float("-inf"))
    lse = torch.logsumexp(s, -1).masked_fill(~valid[:, None, :], 0.0)
    A = torch.softmax(s, -1).nan_to_num(0.0)  # empty rows -> 0
    A = A.masked_fill(~valid[:, None, :, None], 0.0)
    A_out = A if band is None or call.span_mode == "renorm" else A.masked_fill(~band, 0.0)
    vv = call.v.masked_fill(~valid[:, None, :, None], 0.0)
    out = torch.matmul(A_out, vv).masked_fill(~valid[:, None, :, None], 0.0)
    res = AttentionResult(out=out, lse=lse, lengths=call.lengths, backend="torch")
    if call.wants("entropy"):
        res.entropy = -torch.special.xlogy(A, A).sum(-1)
    if call.wants("distance"):
        res.distance = (A * (idx[:, None] - idx[None, :]).abs().to(dt)).sum(-1)
    if call.wants("maxweight"):
        res.maxweight = A.amax(-1)
    if call.wants("colmass"):
        res.colmass = A.sum(-2)
    if call.label_weights is not None:
        res.label_mass = torch.matmul(A, call.label_weights.to(dt)[:, None])
    return res


def compare(got: AttentionResult, call: AttentionCall, ref: Optional[AttentionResult] = None,
            base: Optional[AttentionResult] = None) -> Dict[str, dict]:
    """Per field: kernel error, PyTorch-baseline error, bound, and ``ok``; plus NaN/inf pattern checks.

    ``call`` is the low-precision call; the reference is computed from it in float64 when not given.
    """
    if ref is None:
        ref = reference_attention(call)
    if base is None:
        base = torch_baseline(call)
    floor = FLOOR[call.q.dtype]
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
        scale = max(1.0, float(r64[fin].abs().max())) if fin.any() else 1.0
        bound = 2.0 * berr + floor * scale
        ok = not bad and err <= bound and err == err
        report[name] = {"ok": ok, "err": err, "torch_err": berr, "bound": bound,
                        "why": "; ".join(bad) if bad else ("" if ok else f"error {err:.3e} > bound {bound:.3e}")}
    return report


def failures(report: Dict[str, dict]) -> str:
    """Empty when every field passed, else one line per failing field with the worst error."""
    lines = []
    for name, r in report.items():
        if not r["ok"]:
            extra = f" (err {r['err']:.3e}, torch {r['torch_err']:.3e}, bound {r['bound']:.3e})" if "err" in r else ""
            lines.append(f"{name}: {r['why']}{extra}")
    return "\n".join(lines)

"""Every satkern statistic composed from FlexAttention calls: the strongest alternative a user can build (issue 22).

FlexAttention (torch >= 2.9) returns the row log-sum-exp and the row maximum of the scores beside the
output (``return_aux=AuxRequest(lse=True, max_scores=True)``). From those, and a few more calls, every
statistic of ../docs/METRICS.md can be composed without the map. Two recipes:

``"values"`` (the issue's):
  * maxweight = exp(max_score - lse)                        (the main call's aux outputs)
  * entropy   = lse - scale * q . (P K)                     (a second call whose values are K:
                                                             sum_k A s_k = scale q . sum_k A k)
  * colmass   = exp(lse')  of a swapped call (keys as queries, queries as keys) whose score_mod subtracts
                the original query's lse: lse'[k] = log sum_q exp(s_qk - lse_q) = log colmass[k]
  * distance  = w_L (q - E_L[k]) + w_R (E_R[k] - q)          two half-masked calls (k <= q, k > q) whose
                values are the key positions; w = exp(lse_half - lse), E the half's mean position.
  The value outputs of the entropy and distance calls come back in the input dtype (bf16 on the GPU), so
  those two statistics carry the output's rounding (2^-9 relative in bf16); the check says whether that
  stays inside the project's tolerance rule.

``"lse"`` (every statistic from float32 log-sum-exps, no value output):
  * maxweight, colmass as above;
  * entropy   = exp(lse_H - lse), lse_H of a call whose score_mod is s + log(lse_q - s):
                sum_k e^s (lse - s) = e^lse sum_k A (-log A) = e^lse H;
  * distance  = exp(lse_D - lse), lse_D of a call whose score_mod is s + log abs(q - k).

Both cost the main call plus three (values: one full, two half-masked, one swapped; lse: three full).

Padding (``lengths``, prefix padding as satkern's): every call's mask_mod admits only valid keys and
valid queries, so padded rows are fully masked (flex: lse -inf, output 0); every statistic and ``lse``
of a padded row is then set to 0 (the contract's value) with one ``where``. Every statistic composes for
padded batches.

On the CPU, FlexAttention runs eagerly (unfused, the map materialized) and refuses ``max_scores``
(torch 2.13: "Returning max scores is not supported on CPU/MPS"); there :func:`flex_aux` calls the
higher-order op the public call wraps (``torch._higher_order_ops.flex_attention``, whose CPU
implementation ``sdpa_dense`` is what the public eager call runs, through ``torch.compile(backend="eager")``)
with the public call's kernel options plus the max; that also spares a dynamo trace per call (and a torch
2.13 crash in dynamo's recompilation-reason code when a later call passes one tensor as both key and
value). This lets the composite be tested against the float64 reference on any machine
(tests/test_flex_composite.py). On CUDA every call is the public ``flex_attention`` (or the compiled one
given as ``flex``); the entropy call of the ``values`` recipe passes a copy of K as its values, so no call
aliases two arguments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import torch

ALL_STATS = ("entropy", "distance", "colmass", "maxweight")
RECIPES = ("values", "lse")
POS_CHANNELS = 16  # value head dim of the distance calls: flex's GPU kernels want >= 16; channels 2.. are 0
POS_BASE = 64  # position k = 64 * hi + lo, hi and lo <= 128: both exact in bf16 / fp16 (8 / 11 mantissa bits)


@dataclass
class CompositeMasks:
    """What depends only on the shape and the lengths, built once (as a user would cache it).

    ``full``: valid queries x valid keys (``None`` without lengths); ``left`` / ``right``: that and
    ``k <= q`` / ``k > q`` (the distance halves of the ``values`` recipe); ``rows``: bool ``[B or 1, 1, T]``
    valid query rows; ``positions``: the values of the distance calls, ``[B, H, T, POS_CHANNELS]`` in the
    input dtype (channel 0 = k // 64, channel 1 = k % 64)."""

    T: int
    full: Optional[object]
    left: Optional[object]
    right: Optional[object]
    rows: torch.Tensor
    positions: Optional[torch.Tensor]


def composite_masks(q: torch.Tensor, lengths: Optional[torch.Tensor] = None, *, recipe: str = "values"
                    ) -> CompositeMasks:
    """Block masks and position values for ``q`` ``[B, H, T, D]`` (and ``lengths`` ``[B]``, prefix padding)."""
    from torch.nn.attention.flex_attention import create_block_mask

    if recipe not in RECIPES:
        raise ValueError(f"recipe: expected one of {RECIPES}; got {recipe!r}")
    B, H, T, _ = q.shape
    dev = q.device
    idx = torch.arange(T, device=dev)
    if lengths is None:
        rows = torch.ones(1, 1, T, dtype=torch.bool, device=dev)
        full = None

        def left_mod(b, h, qi, ki):
            return ki <= qi

        def right_mod(b, h, qi, ki):
            return ki > qi
        mb = None
    else:
        n = lengths.to(device=dev, dtype=torch.int64)
        rows = (idx[None, :] < n[:, None])[:, None, :]

        def valid_mod(b, h, qi, ki):
            return (qi < n[b]) & (ki < n[b])

        def left_mod(b, h, qi, ki):
            return (qi < n[b]) & (ki < n[b]) & (ki <= qi)

        def right_mod(b, h, qi, ki):
            return (qi < n[b]) & (ki < n[b]) & (ki > qi)
        mb = B
        full = create_block_mask(valid_mod, B, None, T, T, device=dev)
    left = right = positions = None
    if recipe == "values":
        left = create_block_mask(left_mod, mb, None, T, T, device=dev)
        right = create_block_mask(right_mod, mb, None, T, T, device=dev)
        pos = torch.zeros(T, POS_CHANNELS, device=dev, dtype=q.dtype)
        pos[:, 0] = torch.div(idx, POS_BASE, rounding_mode="floor").to(q.dtype)
        pos[:, 1] = (idx % POS_BASE).to(q.dtype)
        positions = pos.expand(B, H, T, POS_CHANNELS).contiguous()
    return CompositeMasks(T=T, full=full, left=left, right=right, rows=rows, positions=positions)


def _ln2() -> float:
    return math.log(2.0)


def flex_aux(q, k, v, *, score_mod=None, block_mask=None, scale=None, max_scores=False,
             flex: Optional[Callable] = None):
    """``(out, lse, max_score or None)`` of one FlexAttention call, natural-log units.

    ``flex``: the flex_attention to call (a compiled one on the GPU; default the public one). On the CPU the
    higher-order op the public call wraps is called directly with the public call's kernel options (the
    public call refuses ``max_scores`` there; module docstring); the op returns log2 units."""
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    if q.device.type == "cpu":
        from torch._higher_order_ops.flex_attention import flex_attention as flex_hop
        from torch.nn.attention.flex_attention import _create_empty_block_mask

        if block_mask is None:
            block_mask = _create_empty_block_mask(q, k)
        options = {"BACKEND": "AUTO", "PRESCALE_QK": False, "ROWS_GUARANTEED_SAFE": False,
                   "BLOCKS_ARE_CONTIGUOUS": False, "WRITE_DQ": True, "OUTPUT_LOGSUMEXP": True, "OUTPUT_MAX": True}
        mod = score_mod if score_mod is not None else (lambda s, b, h, qi, ki: s)
        out, lse, mx = flex_hop(q, k, v, mod, block_mask.as_tuple(), q.shape[-1] ** -0.5 if scale is None else scale,
                                options)
        return out, lse * _ln2(), mx * _ln2()
    fn = flex if flex is not None else flex_attention
    out, aux = fn(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                  return_aux=AuxRequest(lse=True, max_scores=max_scores))
    return out, aux.lse, (aux.max_scores if max_scores else None)


def flex_statistics(q, k, v, masks: CompositeMasks, *, scale: Optional[float] = None,
                    stats: Sequence[str] = ALL_STATS, recipe: str = "values",
                    flex: Optional[Callable] = None) -> Dict[str, torch.Tensor]:
    """``{"out", "lse", stat...}`` composed from FlexAttention calls (module docstring); statistics and
    ``lse`` in float32 (float64 for float64 inputs), padded rows 0, shapes as ``satkern.attention``'s."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe: expected one of {RECIPES}; got {recipe!r}")
    bad = [s for s in stats if s not in ALL_STATS]
    if bad:
        raise ValueError(f"stats: unknown {bad}; expected any of {ALL_STATS}")
    sd = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    rows = masks.rows
    out, lse, mx = flex_aux(q, k, v, block_mask=masks.full, scale=scale, max_scores="maxweight" in stats, flex=flex)
    lse = lse.to(sd)
    lse0 = torch.where(rows, lse, torch.zeros((), dtype=sd, device=lse.device))  # finite everywhere
    res = {"out": out, "lse": lse0}

    def zero_padded(x):
        return torch.where(rows, x, torch.zeros((), dtype=sd, device=x.device))

    if "maxweight" in stats:
        res["maxweight"] = zero_padded(torch.exp(mx.to(sd) - lse))
    if "colmass" in stats:
        def minus_query_lse(s, b, h, qi, ki):  # swapped: ki is the original query
            return s - lse0[b, h, ki]
        _, lse_c, _ = flex_aux(k, q, v, score_mod=minus_query_lse, block_mask=masks.full, scale=scale, flex=flex)
        res["colmass"] = zero_padded(torch.exp(lse_c.to(sd)))
    if recipe == "values":
        if "entropy" in stats:
            pk, _, _ = flex_aux(q, k, k.clone(), block_mask=masks.full, scale=scale, flex=flex)
            res["entropy"] = zero_padded(lse - scale * (q.to(sd) * pk.to(sd)).sum(-1))
        if "distance" in stats:
            qpos = torch.arange(masks.T, device=q.device, dtype=sd)
            o_l, lse_l, _ = flex_aux(q, k, masks.positions, block_mask=masks.left, scale=scale, flex=flex)
            o_r, lse_r, _ = flex_aux(q, k, masks.positions, block_mask=masks.right, scale=scale, flex=flex)
            mean_l = POS_BASE * o_l[..., 0].to(sd) + o_l[..., 1].to(sd)
            mean_r = POS_BASE * o_r[..., 0].to(sd) + o_r[..., 1].to(sd)
            w_l = torch.exp(lse_l.to(sd) - lse)  # the half's share of the row's mass (0 for an empty half)
            w_r = torch.exp(lse_r.to(sd) - lse)
            res["distance"] = zero_padded(w_l * (qpos - mean_l) + w_r * (mean_r - qpos))
    else:
        if "entropy" in stats:
            def plus_log_surprise(s, b, h, qi, ki):  # s + log(-log A[q, k]), -log A = lse_q - s >= 0
                return s + torch.log(torch.clamp(lse0[b, h, qi] - s, min=0.0))
            _, lse_h, _ = flex_aux(q, k, v, score_mod=plus_log_surprise, block_mask=masks.full, scale=scale, flex=flex)
            res["entropy"] = zero_padded(torch.exp(lse_h.to(sd) - lse))
        if "distance" in stats:
            def plus_log_distance(s, b, h, qi, ki):  # s + log abs(q - k); the diagonal gets -inf (weight 0)
                return s + torch.log((qi - ki).abs().to(s.dtype))
            _, lse_d, _ = flex_aux(q, k, v, score_mod=plus_log_distance, block_mask=masks.full, scale=scale, flex=flex)
            res["distance"] = zero_padded(torch.exp(lse_d.to(sd) - lse))
    return res


def as_result(res: Dict[str, torch.Tensor], lengths: torch.Tensor):
    """The composite's dict as a :class:`satkern.AttentionResult` (for ``satkern.ops.testing.compare``)."""
    from satkern.ops.contract import AttentionResult

    r = AttentionResult(out=res["out"], lse=res["lse"], lengths=lengths, backend="flex composite")
    for name in ALL_STATS:
        if name in res:
            setattr(r, name, res[name])
    return r


def check(q, k, v, res: Dict[str, torch.Tensor], *, lengths=None, scale=None, stats: Sequence[str] = ALL_STATS,
          satkern_result=None) -> Dict[str, dict]:
    """The composite's fields against the float64 reference under the project's tolerance rule
    (:func:`satkern.ops.testing.compare`: at most 2x plain PyTorch's error plus a floor), per field
    ``{"ok", "err", "bound", "why"}``; with ``satkern_result`` also ``"vs_satkern"``, the largest
    absolute difference from satkern's value of that field."""
    from satkern.ops.contract import validate
    from satkern.ops.testing import compare

    call = validate(q, k, v, lengths=lengths, scale=scale, stats=tuple(stats))
    got = as_result(res, call.lengths)
    report = compare(got, call)
    if satkern_result is not None:
        for name, r in report.items():
            a, b = getattr(got, name, None), getattr(satkern_result, name, None)
            if a is not None and b is not None:
                r["vs_satkern"] = float((a.double() - b.double()).abs().max())
    return report


__all__ = ["ALL_STATS", "RECIPES", "CompositeMasks", "composite_masks", "flex_aux", "flex_statistics", "as_result",
           "check"]

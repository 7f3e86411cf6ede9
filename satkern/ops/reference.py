"""The reference backend: plain PyTorch, materializes every T x T map, computes in float64.

It is the oracle every other backend is tested against, so it is written for
clarity, not speed: each quantity is computed straight from its definition in
METRICS.md on the full map ``A`` (:func:`satkern.ops.maps.call_distribution`, the
map :func:`satkern.attention_map` returns).

Conventions shared by every backend (the contract):

* padded query rows (q >= length) output 0, and their ``lse`` and statistics are 0;
* a valid row whose every admissible score is -inf (a bias that masks all keys)
  is an empty distribution: output 0, ``lse`` = -inf, statistics 0;
* a masked head (``head_mask`` 0) outputs 0; its ``lse`` and statistics are NaN;
* in span mode ``zero`` the statistics describe A before zeroing; in ``renorm``
  the banded distribution.
"""
from __future__ import annotations

from typing import List

import torch

from .contract import AttentionCall, AttentionResult
from .dispatch import Backend, register_backend
from .maps import call_distribution, frame_masks, output_weights


def reference_attention(call: AttentionCall) -> AttentionResult:
    B, H, T, D = call.shape
    sd = call.stat_dtype
    A, lse, _ = call_distribution(call)  # the map the statistics describe (span "zero": before zeroing)
    valid, _ = frame_masks(call.lengths, T, None)
    row_valid, key_valid = valid[:, None, :, None], valid[:, None, None, :]
    v = torch.where(key_valid.transpose(-1, -2), call.v.to(torch.float64), torch.zeros((), dtype=torch.float64))
    out = torch.matmul(output_weights(A, call), v)

    res = AttentionResult(out=out, lse=lse, lengths=call.lengths, backend="reference")
    idx = torch.arange(T, device=call.q.device, dtype=torch.float64)
    if call.wants("entropy"):
        # A log A with log taken of 1 where A = 0: the same values as xlogy(A, A), and a gradient that is
        # finite (xlogy's gradient in its second argument, A / A, is NaN where A = 0)
        res.entropy = -(A * torch.log(torch.where(A > 0, A, torch.ones((), dtype=A.dtype)))).sum(-1)
    if call.wants("distance"):
        res.distance = (A * (idx[:, None] - idx[None, :]).abs()).sum(-1)
    if call.wants("maxweight"):
        res.maxweight = A.amax(-1) if T > 0 else A.sum(-1)  # amax is undefined on an empty axis
    if call.wants("colmass"):
        res.colmass = torch.where(row_valid, A, torch.zeros((), dtype=torch.float64)).sum(-2)
    if call.label_weights is not None:
        W = torch.where(key_valid[:, 0, 0, :, None], call.label_weights.to(torch.float64),
                        torch.zeros((), dtype=torch.float64))
        res.label_mass = torch.matmul(A, W[:, None])

    # Padded rows: out, lse and statistics 0 (A is already 0 there; guard NaN from inputs).
    rv = row_valid.squeeze(-1).expand(B, H, T)
    res.out = torch.where(rv[..., None], res.out, torch.zeros((), dtype=torch.float64))
    if call.head_mask is not None:
        keep = call.head_mask[:, :, None]
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=out.device)
        res.out = torch.where(keep[..., None], res.out, torch.zeros((), dtype=torch.float64))
        res.lse = torch.where(keep, res.lse, nan)
        for name in ("entropy", "distance", "colmass", "maxweight"):
            t = getattr(res, name)
            if t is not None:
                setattr(res, name, torch.where(keep, t, nan))
        if res.label_mass is not None:
            res.label_mass = torch.where(keep[..., None], res.label_mass, nan)

    res.out = res.out.to(call.q.dtype)
    res.lse = res.lse.to(sd)
    for name in ("entropy", "distance", "colmass", "maxweight", "label_mass"):
        t = getattr(res, name)
        if t is not None:
            setattr(res, name, t.to(sd))
    return res


class ReferenceBackend(Backend):
    """float64, materializes the maps; any device, any float dtype. The oracle."""

    name = "reference"
    priority = 0

    def reasons(self, call: AttentionCall) -> List[str]:
        return []

    def run(self, call: AttentionCall) -> AttentionResult:
        return reference_attention(call)


register_backend(ReferenceBackend())

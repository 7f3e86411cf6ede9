"""The reference backend: plain PyTorch, materializes every T x T map, computes in float64.

It is the oracle every other backend is tested against, so it is written for
clarity, not speed: each quantity is computed straight from its definition in
METRICS.md on the full map ``A``.

Conventions shared by every backend (the contract):

* padded query rows (q >= length) output 0, and their ``lse`` and statistics are 0;
* a valid row whose every admissible score is -inf (a bias that masks all keys)
  is an empty distribution: output 0, ``lse`` = -inf, statistics 0;
* a masked head (``head_mask`` 0) outputs 0; its ``lse`` and statistics are NaN;
* in span mode ``zero`` the statistics describe A before zeroing; in ``renorm``
  the banded distribution.
"""
from __future__ import annotations

from typing import List, Tuple

import torch

from .contract import AttentionCall, AttentionResult
from .dispatch import Backend, register_backend


def _masks(call: AttentionCall) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row_valid [B,1,T,1], key_valid [B,1,1,T], band [T,T] or None)."""
    B, H, T, D = call.shape
    idx = torch.arange(T, device=call.q.device)
    valid = idx[None, :] < call.lengths[:, None]  # [B, T]
    band = None
    if call.span is not None:
        band = (idx[:, None] - idx[None, :]).abs() <= call.span
    return valid[:, None, :, None], valid[:, None, None, :], band


def attention_map(call: AttentionCall) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The float64 attention distribution ``A`` [B,H,T,T] the statistics describe.

    Returns ``(A, lse, nonempty)``: ``A`` is zero on padded rows, padded keys,
    (in ``renorm``) keys outside the span, and on empty rows; ``lse`` [B,H,T] is the
    log-sum-exp of the admissible scores; ``nonempty`` [B,H,T] marks valid rows with
    at least one admissible finite score. Head masks are not applied here.
    """
    B, H, T, D = call.shape
    if T == 0:  # no frames at all: empty maps (amax over an empty key axis is undefined)
        z = call.q.new_zeros((B, H, 0), dtype=torch.float64)
        return call.q.new_zeros((B, H, 0, 0), dtype=torch.float64), z, z.bool()
    q = call.q.to(torch.float64)
    k = call.k.to(torch.float64)
    s = torch.matmul(q, k.transpose(-1, -2)) * call.scale
    if call.bias is not None:
        s = s + call.bias.to(torch.float64)
    row_valid, key_valid, band = _masks(call)
    admissible = key_valid.expand(B, H, T, T)
    if band is not None and call.span_mode == "renorm":
        admissible = admissible & band
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float64, device=s.device)
    s = torch.where(admissible, s, neg_inf)
    m = s.amax(dim=-1, keepdim=True)
    nonempty = (m > float("-inf")) & row_valid  # NaN rows count as nonempty: NaN propagates
    nonempty = nonempty | (m != m) & row_valid
    m_safe = torch.where(m > float("-inf"), m, torch.zeros_like(m))
    p = torch.where(admissible, torch.exp(s - m_safe), torch.zeros_like(s))
    l = p.sum(dim=-1, keepdim=True)
    A = torch.where(nonempty, p / torch.where(l > 0, l, torch.ones_like(l)), torch.zeros_like(p))
    # log of 1 where l = 0 (empty rows, taken from the other branch): keeps the gradient finite (0, not 0/0)
    log_l = torch.log(torch.where(l > 0, l, torch.ones_like(l)))
    lse = torch.where(nonempty, m_safe + log_l, torch.where(row_valid, neg_inf, torch.zeros_like(m)))
    # A row with a NaN or +inf admissible score has no distribution: the whole row is NaN.
    broken = row_valid & ((m != m) | (m == float("inf")))
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=s.device)
    A = torch.where(broken, nan, A)
    lse = torch.where(broken, nan, lse)
    return A, lse.squeeze(-1), nonempty.squeeze(-1).expand(B, H, T)


def reference_attention(call: AttentionCall) -> AttentionResult:
    B, H, T, D = call.shape
    sd = call.stat_dtype
    A, lse, nonempty = attention_map(call)
    row_valid, key_valid, band = _masks(call)
    v = torch.where(key_valid.transpose(-1, -2), call.v.to(torch.float64), torch.zeros((), dtype=torch.float64))
    A_out = A
    if band is not None and call.span_mode == "zero":
        A_out = torch.where(band, A, torch.zeros((), dtype=torch.float64))
    out = torch.matmul(A_out, v)

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

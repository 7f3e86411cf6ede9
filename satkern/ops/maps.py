"""The attention map as the op defines it, in one place.

Everything in satkern that forms a map ``A`` (the reference backend, the tests' plain-PyTorch
baseline, the patch's padded-row recompute, map capture for reports and segmentation) goes through
the three functions here:

* :func:`scores` -- ``q k^T * scale (+ bias)`` in a chosen dtype;
* :func:`masked_softmax` -- the row conventions of the contract (METRICS.md; ``reference.py``):
  inadmissible keys take no weight, a valid row with no admissible finite score is empty
  (all zero, ``lse = -inf``), a row with a NaN or +inf admissible score is NaN, rows that are not
  valid (padded queries) are zero with ``lse = 0``;
* :func:`attention_map` -- the public function: the same arguments as :func:`satkern.attention`,
  the maps ``[B, H, T, T]`` out.

:func:`call_distribution` is the call-level form the reference backend computes its statistics from.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .contract import AttentionCall, validate


def scores(q: torch.Tensor, k: torch.Tensor, scale: float, bias: Optional[torch.Tensor] = None,
           dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``q k^T * scale + bias`` ``[..., Tq, Tk]`` computed in ``dtype`` (default: q's)."""
    dt = q.dtype if dtype is None else dtype
    s = torch.matmul(q.to(dt), k.to(dt).transpose(-1, -2)) * scale
    if bias is not None:
        s = s + bias.to(dt)
    return s


def frame_masks(lengths: torch.Tensor, T: int, span: Optional[int]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(valid [B, T] bool: frame < length, band [T, T] bool: abs(q - k) <= span, or None)``."""
    idx = torch.arange(T, device=lengths.device)
    valid = idx[None, :] < lengths[:, None]
    band = None if span is None else (idx[:, None] - idx[None, :]).abs() <= span
    return valid, band


def masked_softmax(s: torch.Tensor, admissible: torch.Tensor,
                   row_valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row softmax of the scores ``s [..., Tq, Tk]`` over the admissible keys, in ``s``'s dtype.

    ``admissible`` (bool, broadcastable to ``s``): keys a row may attend to; ``row_valid`` (bool,
    broadcastable to ``[..., Tq, 1]``): rows that have a distribution at all. Returns
    ``(A, lse, nonempty)``:

    * ``A`` like ``s``: zero outside the admissible keys, on rows that are not valid, and on empty
      rows (valid, but no admissible finite score, e.g. a bias of -inf on every key); NaN on a valid
      row with a NaN or +inf admissible score (no distribution);
    * ``lse`` ``[..., Tq]``: log-sum-exp of the admissible scores; -inf on empty rows, 0 on rows
      that are not valid, NaN on NaN rows;
    * ``nonempty`` ``[..., Tq]`` bool: valid rows with a distribution (NaN rows included).

    Differentiable with finite gradients everywhere the values are finite: the rows without a
    distribution are computed from zeros, never from -inf - -inf.
    """
    neg_inf = torch.tensor(float("-inf"), dtype=s.dtype, device=s.device)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    if s.shape[-1] == 0:  # no keys: every valid row is empty (amax over an empty axis is undefined)
        row_valid = row_valid.expand(s.shape[:-1] + (1,))
        return s, torch.where(row_valid, neg_inf, zero).squeeze(-1), torch.zeros_like(row_valid).squeeze(-1)
    s = torch.where(admissible, s, neg_inf)
    m = s.amax(dim=-1, keepdim=True)
    row_valid = row_valid.expand_as(m)
    nonempty = row_valid & ((m > float("-inf")) | (m != m))  # NaN rows count as nonempty: NaN propagates
    safe = torch.where(nonempty, s, zero)
    A = torch.where(nonempty, torch.softmax(safe, dim=-1), zero)
    lse = torch.where(nonempty, torch.logsumexp(safe, dim=-1, keepdim=True), torch.where(row_valid, neg_inf, zero))
    broken = row_valid & ((m != m) | (m == float("inf")))
    nan = torch.tensor(float("nan"), dtype=s.dtype, device=s.device)
    A = torch.where(broken, nan, A)
    lse = torch.where(broken, nan, lse)
    return A, lse.squeeze(-1), nonempty.squeeze(-1)


def call_distribution(call: AttentionCall, dtype: torch.dtype = torch.float64
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The map the statistics of ``call`` describe, in ``dtype``: ``(A [B,H,T,T], lse [B,H,T], nonempty [B,H,T])``.

    ``A`` is :func:`masked_softmax` of the call's scores over the valid keys (and, in span mode
    ``renorm``, the keys in the band); in span mode ``zero`` it is the map *before* the zeroing.
    Head masks are not applied here.
    """
    B, H, T, D = call.shape
    if T == 0:  # no frames at all: empty maps (amax over an empty key axis is undefined)
        z = call.q.new_zeros((B, H, 0), dtype=dtype)
        return call.q.new_zeros((B, H, 0, 0), dtype=dtype), z, z.bool()
    s = scores(call.q, call.k, call.scale, call.bias, dtype)
    valid, band = frame_masks(call.lengths, T, call.span)
    admissible = valid[:, None, None, :]
    if band is not None and call.span_mode == "renorm":
        admissible = admissible & band
    A, lse, nonempty = masked_softmax(s, admissible, valid[:, None, :, None])
    return A, lse, nonempty.expand(B, H, T)


def output_weights(A: torch.Tensor, call: AttentionCall) -> torch.Tensor:
    """The weights the output is computed from: ``A`` of :func:`call_distribution` with, in span mode
    ``zero``, the weights outside the band set to 0 (after the softmax, no renormalization)."""
    if call.span is None or call.span_mode != "zero":
        return A
    _, band = frame_masks(call.lengths, call.shape[2], call.span)
    return torch.where(band, A, torch.zeros((), dtype=A.dtype, device=A.device))


def call_map(call: AttentionCall, dtype: torch.dtype = torch.float64, *, for_statistics: bool = False) -> torch.Tensor:
    """:func:`attention_map` of a validated call (see there)."""
    A, _, _ = call_distribution(call, dtype)
    if not for_statistics:
        A = output_weights(A, call)
    if call.head_mask is not None:
        A = torch.where(call.head_mask[:, :, None, None], A, torch.zeros((), dtype=A.dtype, device=A.device))
    return A


def attention_map(q: torch.Tensor, k: torch.Tensor, v: Optional[torch.Tensor] = None, *, lengths=None, scale=None,
                  bias=None, span=None, span_mode: str = "zero", head_mask=None, dtype: torch.dtype = torch.float64,
                  for_statistics: bool = False) -> torch.Tensor:
    """The attention maps ``A [B, H, T, T]`` of a :func:`satkern.attention` call (float64 by default).

    Arguments as :func:`satkern.attention` (``v`` is optional: the maps do not depend on it; when given
    it is checked like the op's). ``A[b, h, q, key]`` is the weight query frame ``q`` gives key frame
    ``key``; the op's output is ``A @ v``. The conventions are the op's:

    * padded query rows (``q >= lengths[b]``) and padded keys are 0;
    * a valid row whose every admissible score is -inf (a bias that masks all keys) is 0;
    * a valid row with a NaN (or +inf) admissible score is NaN;
    * span ``r``, ``span_mode="zero"``: weights with ``abs(q - key) > r`` are 0 (zeroed after the
      softmax, rows not renormalized: the weights the output uses); ``for_statistics=True`` gives the
      map before the zeroing, the one the statistics describe;
      ``span_mode="renorm"``: those keys are masked before the softmax (rows sum to 1 again)::

          r = 1, T = 4, lengths = [3]   (x: a weight, 0: zero; query row 3 and key 3 are padding)
                  k 0 1 2 3
              q 0   x x 0 0     "zero":   softmax over keys 0..2, then 0 outside the band (rows sum < 1)
                1   x x x 0     "renorm": softmax over the band only (rows sum to 1)
                2   0 x x 0
                3   0 0 0 0

    * a masked head (``head_mask`` 0) has the map 0 (its output is 0).

    ``dtype``: the dtype the scores and the softmax are computed in (and returned).
    Returns a float tensor ``[B, H, T, T]`` on q's device.
    """
    call = validate(q, k, k if v is None else v, lengths=lengths, scale=scale, bias=bias, span=span,
                    span_mode=span_mode, head_mask=head_mask)
    return call_map(call, dtype, for_statistics=for_statistics)


__all__ = ["attention_map", "call_map", "call_distribution", "output_weights", "masked_softmax", "scores", "frame_masks"]

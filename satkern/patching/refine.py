"""The patch's refinement: which heads each layer keeps, its span, and the padded query rows.

The op itself prunes (``head_mask``) and bands (``span``); what is here turns ``satkern.patch``'s
arguments into per-layer values, and recomputes the rows of padded query frames the way the model's
own attention computes them (the op outputs 0 there).
"""
from __future__ import annotations

import operator
from typing import List, Optional

import torch

from ..ops.maps import masked_softmax, scores


def parse_prune(prune, num_layers: int, num_heads: int) -> List[Optional[torch.Tensor]]:
    """Per layer: bool ``[H]`` kept heads (CPU), or ``None`` when the layer keeps every head."""
    keep: List[Optional[torch.Tensor]] = [None] * num_layers
    if prune is None:
        return keep
    try:
        pairs = [tuple(p) for p in prune]
    except TypeError:
        raise TypeError("satkern.patch: argument 'prune' must be a set of (layer, head) pairs") from None
    for p in pairs:
        try:
            if len(p) != 2 or any(isinstance(i, bool) for i in p):
                raise TypeError
            layer, head = (operator.index(i) for i in p)  # ints, numpy / 0-d torch integers
        except TypeError:
            raise ValueError(f"satkern.patch: argument 'prune' must hold (layer, head) int pairs; "
                             f"got {p!r}") from None
        if not (0 <= layer < num_layers and 0 <= head < num_heads):
            raise ValueError(f"satkern.patch: pruned head {p} out of range: {num_layers} layers x "
                             f"{num_heads} heads")
        if keep[layer] is None:
            keep[layer] = torch.ones(num_heads, dtype=torch.bool)
        keep[layer][head] = False
    return keep


def parse_span(span, num_layers: int) -> List[Optional[int]]:
    """Per layer: the span in frames, or ``None``; ``span`` is one value for every layer or ``{layer: r}``."""
    def check(r, where):
        if r is None:
            return None
        try:
            if isinstance(r, bool):
                raise TypeError
            value = operator.index(r)
        except TypeError:
            value = -1
        if value < 0:
            raise ValueError(f"satkern.patch: span{where} must be a non-negative int (frames) or None; got {r!r}")
        return value

    if isinstance(span, dict):
        bad = [l for l in span if not isinstance(l, int) or not 0 <= l < num_layers]
        if bad:
            raise ValueError(f"satkern.patch: span dict keys must be layer indices in "
                             f"[0, {num_layers}); got {bad}")
        return [check(span.get(l), f"[{l}]") for l in range(num_layers)]
    return [check(span, "")] * num_layers


def fill_padded_rows(out, q, k, v, lengths, scale, bias, heads, span, span_mode):
    """Write, into ``out``, the rows of padded query frames as the model's own attention computes them.

    The kernels output 0 on padded query rows (q >= T); the models' eager attention lets
    those rows attend to the valid keys. Models that mix frames outside the attention
    (conformer convolutions, SEW pooling) carry those rows into valid frames, so they
    are recomputed here, per utterance, in the input dtype: the map of the padded queries
    over the valid keys (:func:`satkern.ops.maps.masked_softmax` of the scores plus the bias;
    ``renorm``: keys in the band only; ``zero``: weights outside the band zeroed after it), times
    the valid values. Pruned heads stay 0. Rows with no admissible key (or a NaN) stay 0.

    ``lengths`` are host (CPU) values; ``heads`` the kept heads' indices on q's device, or ``None`` for all.
    """
    B, H, T, D = q.shape
    for b in range(B):
        n = int(lengths[b])
        if n >= T or n == 0:
            continue
        qb, kb, vb = q[b, :, n:], k[b, :, :n], v[b, :, :n]
        bb = None if bias is None else bias[b, :, n:, :n]
        if heads is not None:
            qb, kb, vb = qb[heads], kb[heads], vb[heads]
            bb = None if bb is None else bb[heads]
        s = scores(qb, kb, scale, bb)
        every = torch.ones((), dtype=torch.bool, device=q.device)
        band = every
        if span is not None:
            qi = torch.arange(n, T, device=q.device)[:, None]
            ki = torch.arange(n, device=q.device)[None, :]
            band = (qi - ki).abs() <= span
        a, _, _ = masked_softmax(s, band if span_mode == "renorm" else every, every)
        if span is not None:  # "zero": after the softmax (in "renorm" those weights are 0 already)
            a = torch.where(band, a, torch.zeros((), dtype=a.dtype, device=a.device))
        a = torch.nan_to_num(a, nan=0.0)  # NaN rows: 0, as the model's masked rows
        rows = torch.matmul(a, vb).to(out.dtype)
        if heads is None:
            out[b, :, n:] = rows
        else:
            out[b, heads, n:] = rows
    return out

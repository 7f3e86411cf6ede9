"""Chunked utterances (s3prl's ``sequence_length`` pieces): labels per chunk, and the chunks' metrics
merged into each utterance's, exactly as the definitions give them for its block-diagonal map."""
from __future__ import annotations

from typing import Dict

import torch

from .observers import ChunkSlot


def slice_chunk_labels(W: torch.Tensor, chunk: ChunkSlot, T: int) -> torch.Tensor:
    """Rows of the labels ``W [B, T_total, Y]`` (frames of the concatenated output) for one chunk slot:
    ``[b_j, T, Y]``, utterance ``u``'s frames ``offset .. offset + frames`` first, zeros after."""
    out = W.new_zeros(len(chunk.utterances), T, W.shape[-1])
    for i, (u, o, n) in enumerate(zip(chunk.utterances.tolist(), chunk.offsets.tolist(), chunk.frames.tolist())):
        out[i, :n] = W[u, o:o + n]
    return out


def merge_chunk_metrics(slots, parts, total: torch.Tensor, which) -> Dict[str, torch.Tensor]:
    """Per-utterance G, V, D, W of maps made of independent chunks (a block-diagonal map), from each
    chunk's own metrics (METRICS.md; ``T = sum_c T_c``, ``w_c = T_c / T``):

    * G = sum_c w_c G_c                 (the mean row entropy over all rows)
    * D = sum_c w_c^2 D_c               (distances never cross a chunk; 1/T^2 replaces 1/T_c^2)
    * V = sum_c w_c V_c - H(w)          (colmass / T is the w-weighted mixture of the chunks' colmass / T_c,
                                         whose supports are disjoint: H(mix) = sum_c w_c H_c + H(w))
    * W = max_c W_c

    ``slots``: per slot ``(utterances [b_j], chunk frames [b_j])``; ``parts``: per slot a dict of
    ``[b_j, H]`` metrics; ``total`` ``[B]``. Chunks of 0 frames take no part; an utterance of
    length 0 gets NaN.
    """
    B = int(total.numel())
    dev = next((t.device for p in parts for t in p.values()), torch.device("cpu"))
    H = next((t.shape[1] for p in parts for t in p.values()), 0)
    f64 = dict(dtype=torch.float64, device=dev)
    totf = total.to(**f64)
    acc = {"G": torch.zeros(B, H, **f64), "V": torch.zeros(B, H, **f64), "D": torch.zeros(B, H, **f64),
           "W": torch.full((B, H), float("-inf"), **f64)}
    entropy_w = torch.zeros(B, **f64)
    for (utts, frames), part in zip(slots, parts):
        utts, frames = utts.to(dev), frames.to(**f64)
        use = frames > 0
        if not bool(use.any()):
            continue
        u = utts[use]
        w = frames[use] / totf[u]  # [b]
        entropy_w.index_add_(0, u, -torch.special.xlogy(w, w))
        for k in which:
            x = part[k][use].to(torch.float64)
            if k == "G":
                acc["G"].index_add_(0, u, w[:, None] * x)
            elif k == "V":
                acc["V"].index_add_(0, u, w[:, None] * x)
            elif k == "D":
                acc["D"].index_add_(0, u, (w * w)[:, None] * x)
            else:  # max, NaN (pruned head) propagating
                cur = acc["W"][u]
                acc["W"][u] = torch.where(torch.isnan(x) | torch.isnan(cur), torch.full_like(x, float("nan")),
                                          torch.maximum(cur, x))
    acc["V"] = acc["V"] - entropy_w[:, None]
    empty = (total == 0).to(dev)[:, None]
    return {k: torch.where(empty, torch.full_like(acc[k], float("nan")), acc[k]) for k in which}

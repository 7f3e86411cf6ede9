"""Measurements of a pre-trained model (the model card's numbers, and the shipped models' recorded
fixture metrics).

* :func:`masked_reconstruction` -- masked-frame L1 of the model's own head versus predicting every
  masked frame as the utterance's mean (stacked) frame, pooled over utterances;
* :func:`mean_attention_distance` -- per head, the mean over utterances of the mean over queries of
  ``sum_k abs(q - k) A[q, k]`` (in model frames), i.e. ``-D * T`` per utterance (METRICS.md: D);
* :func:`fixture_metrics` -- the few numbers recorded for a shipped checkpoint on one utterance.

Every utterance runs alone (a batch of one), from its waveform through the model's own features,
trimmed to whole groups of ``downsample_rate`` frames (as ``SpeechModel.prepare`` does).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from ..models.s3prl.model import stack_frames
from .masking import mask_frames


def utterance_features(model, waveform: torch.Tensor) -> torch.Tensor:
    """The model's features ``[T, F]`` of one waveform, ``T`` trimmed to a multiple of the downsample rate."""
    f = model.features.extract_one(torch.as_tensor(waveform, dtype=torch.float32)).to(torch.float32)
    R = model.config.downsample_rate
    return f[: f.shape[0] // R * R]


@torch.no_grad()
def masked_reconstruction(model, head, feats: Sequence[torch.Tensor], consecutive: int, proportion: float = 0.15,
                          seed: int = 0) -> Dict[str, float]:
    """Masked-frame L1 over ``feats`` (per-utterance features ``[T_i, F]``): every chosen span zeroed
    (no 10% random / 10% kept alteration at evaluation), spans drawn from ``torch.Generator(seed)``.

    Returns ``model_l1`` (mean abs error of the head's prediction over masked frames x stacked
    dimensions), ``mean_frame_l1`` (the same for the utterance's mean stacked frame), ``ratio`` and
    ``masked_frames``; and, beside the model with the same masks, two baselines that use only the
    unmasked neighbours (:func:`neighbour_fill`): ``interpolation_l1`` / ``interpolation_ratio`` and
    ``nearest_l1`` / ``nearest_ratio``."""
    gen = torch.Generator().manual_seed(int(seed))
    R = model.config.downsample_rate
    model_abs = base_abs = interp_abs = near_abs = 0.0
    count = 0
    frames = 0
    model.eval()
    head.eval()
    for f in feats:
        target = stack_frames(f[None], R)  # [1, T', F*R]
        L = target.shape[1]
        if L < 1:
            continue
        masked, label = mask_frames(target, torch.tensor([L]), consecutive, proportion, gen, alter=False)
        out = model(masked.reshape(1, L * R, -1), torch.tensor([L * R]))
        pred = head(out.last_hidden_state)
        pred = pred[0] if isinstance(pred, (tuple, list)) else pred
        sel = label[0]
        if not bool(sel.any()):
            continue
        mean_frame = target[0].double().mean(0)
        model_abs += float((pred[0, sel].double() - target[0, sel].double()).abs().sum())
        interp, near = neighbour_fill(f[: L * R].double(), sel, R)
        truth = target[0, sel].double()
        interp_abs += float((interp[sel] - truth).abs().sum())
        near_abs += float((near[sel] - truth).abs().sum())
        base_abs += float((mean_frame[None] - target[0, sel].double()).abs().sum())
        count += int(sel.sum()) * target.shape[-1]
        frames += int(sel.sum())
    if count == 0:
        raise ValueError("masked_reconstruction: no masked frames (utterances too short)")
    return {"model_l1": model_abs / count, "mean_frame_l1": base_abs / count,
            "ratio": model_abs / base_abs, "masked_frames": frames,
            "interpolation_l1": interp_abs / count, "interpolation_ratio": interp_abs / base_abs,
            "nearest_l1": near_abs / count, "nearest_ratio": near_abs / base_abs}


def neighbour_fill(feats: torch.Tensor, masked: torch.Tensor, rate: int):
    """Two fills of the masked stacked frames from the unmasked ones, at the feature frame rate
    (10 ms; each stacked frame is ``rate`` feature frames): ``(interpolation, nearest)``, both
    ``[T', F x rate]`` stacked like the target. Interpolation: every feature frame inside a masked
    run is the linear interpolation, in time, of the last unmasked feature frame before the run and
    the first one after it (the one that exists, at an edge); nearest: a copy of the nearer of the
    two. ``feats [T' x rate, F]``, ``masked`` bool ``[T']``."""
    T, Fdim = feats.shape
    frame_masked = masked.repeat_interleave(rate)[:T]
    known = (~frame_masked).nonzero().flatten()
    interp = feats.clone()
    near = feats.clone()
    if known.numel() and frame_masked.any():
        idx = frame_masked.nonzero().flatten()
        pos = torch.searchsorted(known, idx)  # first known frame after each masked frame
        right = known[pos.clamp(max=known.numel() - 1)]
        left = known[(pos - 1).clamp(min=0)]
        has_left, has_right = pos > 0, pos < known.numel()
        left = torch.where(has_left, left, right)
        right = torch.where(has_right, right, left)
        span = (right - left).clamp(min=1).to(feats.dtype)
        w = ((idx - left).to(feats.dtype) / span)[:, None]
        w = torch.where((right == left)[:, None], torch.zeros_like(w), w)
        interp[idx] = (1 - w) * feats[left] + w * feats[right]
        nearer = torch.where((idx - left).abs() <= (right - idx).abs(), left, right)
        near[idx] = feats[nearer]
    Tm = T // rate
    return interp[: Tm * rate].reshape(Tm, rate * Fdim), near[: Tm * rate].reshape(Tm, rate * Fdim)


@torch.no_grad()
def attention_distances(model, feats: Sequence[torch.Tensor]):
    """``(mean_distance [L, H], D [L, H])`` float64 over utterances (eager float32 maps of each
    utterance alone): ``mean_distance`` is the mean over utterances of ``(1/T) sum_q sum_k abs(q-k) A[q,k]``
    (frames), ``D`` the corpus diagonality of METRICS.md, the mean over utterances of
    ``-(1/T^2) sum_q sum_k abs(q-k) A[q,k]``."""
    dist_total = diag_total = None
    n = 0
    model.eval()
    for f in feats:
        if f.shape[0] < model.config.downsample_rate:
            continue
        out = model(f[None], torch.tensor([f.shape[0]]), output_attentions=True)
        per_layer = []
        for A in out.attentions:  # [1, H, T, T]
            T = A.shape[-1]
            idx = torch.arange(T, dtype=torch.float64)
            dist = (idx[:, None] - idx[None, :]).abs()
            per_layer.append((A[0].double() * dist).sum(-1).mean(-1))  # [H]
        d = torch.stack(per_layer)
        T = out.attentions[0].shape[-1]
        dist_total = d if dist_total is None else dist_total + d
        diag_total = -d / T if diag_total is None else diag_total - d / T
        n += 1
    if n == 0:
        raise ValueError("attention_distances: no utterance long enough")
    return dist_total / n, diag_total / n


def mean_attention_distance(model, feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[L, H]``: the first output of :func:`attention_distances`."""
    return attention_distances(model, feats)[0]


def fixture_metrics(model, head, waveform: torch.Tensor, consecutive: int) -> Dict[str, object]:
    """The numbers recorded for a shipped checkpoint on one utterance (compared to 1e-4 in tests)."""
    f = utterance_features(model, waveform)
    rec = masked_reconstruction(model, head, [f], consecutive, seed=0)
    with torch.no_grad():
        out = model(f[None], torch.tensor([f.shape[0]]))
    dist = mean_attention_distance(model, [f])
    return {"frames": int(out.last_hidden_state.shape[1]),
            "last_hidden_mean_abs": float(out.last_hidden_state.double().abs().mean()),
            "last_hidden_first_frame_head": [float(v) for v in out.last_hidden_state[0, 0, :4]],
            "masked_l1": rec["model_l1"], "mean_frame_l1": rec["mean_frame_l1"],
            "mean_attention_distance": [[float(v) for v in row] for row in dist]}


__all__: List[str] = ["utterance_features", "masked_reconstruction", "attention_distances", "mean_attention_distance",
                      "fixture_metrics"]

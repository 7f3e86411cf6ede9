"""Mockingjay's masked acoustic model (MAM) input alteration, as s3prl's pre-training does it.

On the *stacked* frames (``downsample_rate`` feature frames per model frame) of each utterance of
valid length ``L``:

* ``n = round(L * proportion / C)`` span starts are drawn without replacement from
  ``0 .. max(L - C - 1, 0)``; each masks ``C`` consecutive frames (spans may overlap), so about
  ``proportion`` of the frames are masked (s3prl's ``mask_proportion`` 0.15,
  ``mask_consecutive_min = mask_consecutive_max = C``, ``mask_allow_overlap``);
* one draw per utterance: with probability 0.8 the masked frames are set to zero, 0.1 they are
  replaced by the frames of ``n`` other random spans of the same utterance, 0.1 they are kept;
* the loss is taken on the masked frames in every case (``mask_label``).

All randomness comes from the ``torch.Generator`` passed in, so a run is reproducible and
resumable from the generator's state.
"""
from __future__ import annotations

from typing import Tuple

import torch

ZERO_PROBABILITY = 0.8  # BERT/Mockingjay: 80% of masked inputs zeroed,
RANDOM_PROBABILITY = 0.1  # 10% replaced by random frames, the remaining 10% left unchanged


def span_starts(length: int, consecutive: int, proportion: float, generator: torch.Generator) -> torch.Tensor:
    """The span starts of one utterance of ``length`` stacked frames (int64, unsorted)."""
    valid_start_max = max(length - consecutive - 1, 0)
    count = round(length * proportion / consecutive)
    return torch.randperm(valid_start_max + 1, generator=generator)[:count]


def spans_to_frames(starts: torch.Tensor, consecutive: int, length: int) -> torch.Tensor:
    """Frame indices covered by spans of ``consecutive`` frames from ``starts``, clipped to ``length``."""
    frames = (starts[:, None] + torch.arange(consecutive)[None, :]).reshape(-1)
    return frames[frames < length]


def mask_frames(stacked: torch.Tensor, lengths: torch.Tensor, consecutive: int, proportion: float,
                generator: torch.Generator, *, alter: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(masked input [B, T', F], mask_label bool [B, T'])`` for stacked frames ``[B, T', F]``.

    ``alter=False``: every chosen span is zeroed (no 10% random / 10% kept draw); used to
    evaluate reconstruction.
    """
    if consecutive < 1:
        raise ValueError(f"mask consecutive frames must be >= 1; got {consecutive}")
    if not 0.0 < proportion < 1.0:
        raise ValueError(f"mask proportion must be in (0, 1); got {proportion}")
    masked = stacked.clone()
    label = torch.zeros(stacked.shape[:2], dtype=torch.bool, device=stacked.device)
    for b, length in enumerate(lengths.tolist()):
        if length < 1:
            continue
        starts = span_starts(length, consecutive, proportion, generator)
        if starts.numel() == 0:
            continue
        frames = spans_to_frames(starts, consecutive, length).to(stacked.device)
        label[b, frames] = True
        dice = float(torch.rand((), generator=generator)) if alter else 0.0
        if dice < ZERO_PROBABILITY:
            masked[b, frames] = 0.0
        elif dice < ZERO_PROBABILITY + RANDOM_PROBABILITY:
            other = spans_to_frames(span_starts(length, consecutive, proportion, generator), consecutive, length)
            n = min(len(other), len(frames))
            masked[b, frames[:n]] = stacked[b, other[:n].to(stacked.device)]
    return masked, label

"""Padding masks to lengths: satkern's attention takes valid-frame counts, models hand out masks."""
from __future__ import annotations

from typing import Optional

import torch


def lengths_from_mask(mask: Optional[torch.Tensor], batch: int, frames: int) -> Optional[torch.Tensor]:
    """Valid frames per utterance ``[B]`` from a padding mask, checking it is a prefix mask.

    Accepts ``None`` (no padding), a 2-d ``[B, T]`` mask (bool or 0/1: True/1 = valid frame),
    or a 4-d ``[B, 1|H, T, T]`` mask (bool: True = attend; float: 0 = attend, very negative =
    masked) that masks the same keys on every row. Anything else, or a mask that is not
    "the first n frames valid" per utterance, raises ``ValueError``.
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"satkern: attention mask must be a tensor; got {type(mask).__name__}")
    if mask.dim() == 2:
        valid = mask.bool() if mask.dtype == torch.bool else mask != 0
        if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("satkern: a 2-d attention mask must hold 0/1 (or bool) values")
    elif mask.dim() == 4:
        if mask.dtype == torch.bool:
            full = mask
        else:
            # additive float mask: 0 where attended, the dtype's minimum (or -inf) where masked
            full = mask == 0
            if not bool((full | (mask <= torch.finfo(mask.dtype).min / 2)).all()):
                raise ValueError("satkern: the 4-d float attention mask carries values other than 0 and "
                                 "'masked' (an additive bias?); pass biases separately")
        valid = full[:, 0, 0, :]
        if not bool((full == valid[:, None, None, :]).all()):
            raise ValueError("satkern: the attention mask is not a key-padding mask (its rows differ: "
                             "causal or custom masks are not supported by the satkern attention)")
    else:
        raise ValueError(f"satkern: attention mask must be 2-d [B, T] or 4-d [B, 1, T, T]; got shape "
                         f"{tuple(mask.shape)}")
    if valid.shape[0] != batch or valid.shape[-1] != frames:
        raise ValueError(f"satkern: attention mask of shape {tuple(mask.shape)} does not fit a batch of "
                         f"{batch} sequences of {frames} frames")
    lengths = valid.sum(-1).to(torch.int64)
    prefix = torch.arange(frames, device=valid.device)[None, :] < lengths[:, None]
    if not bool((prefix == valid).all()):
        bad = int((prefix != valid).any(-1).nonzero()[0])
        raise ValueError(f"satkern: the attention mask of utterance {bad} is not a prefix (right-padding) "
                         f"mask; satkern needs every utterance's valid frames first, padding after")
    return lengths

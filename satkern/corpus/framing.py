"""Sample-level phone segments -> per-frame label weights W at the model's frame rate (METRICS.md).

Histogram rule: for a model whose frames advance by ``S`` samples, frame ``k`` covers samples
``[k*S, (k+1)*S)`` -- a partition of the audio, the last frame clipped to the audio's end -- and
row ``k`` of ``W`` is the fraction of those samples inside each labelled phone. Samples outside
every segment count for no label (a row may sum to less than 1; an unlabelled frame is all zero)::

    S = 4, num_samples = 10, segments [0,3) "a", [3,10) "b"  (frames [0,4) [4,8) [8,10))
              a     b
    frame 0  3/4   1/4
    frame 1  0     1
    frame 2  0     1        (clipped to 2 samples)
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import torch


def frame_label_weights(segments: Iterable, num_samples: int, frame_stride: int, num_frames: int,
                        label_index: Mapping[str, int], dtype=torch.float32) -> torch.Tensor:
    """Frame label weights ``[num_frames, Y]`` (``Y = len(set(label_index.values()))`` columns).

    Args:
        segments: ``(start, end, label)`` triples or :class:`~satkern.corpus.alignments.Segment`,
            half-open ``[start, end)`` in samples at the model's rate; clipped to the audio.
        num_samples: length of the audio in samples (the clip point of the last frame).
        frame_stride: ``S``, samples per model frame.
        num_frames: frames the model produces for this audio (``SpeechModel.num_frames``); frames
            that start at or past ``num_samples`` are all zero, samples past the last frame are unused.
        label_index: label -> column. A label not in it raises ``KeyError``.
    """
    if frame_stride <= 0:
        raise ValueError(f"frame_label_weights: frame_stride must be positive, got {frame_stride}")
    if num_frames < 0 or num_samples < 0:
        raise ValueError("frame_label_weights: num_frames and num_samples must be >= 0")
    Y = (max(label_index.values()) + 1) if label_index else 0
    W = np.zeros((num_frames, Y), dtype=np.float64)
    S = int(frame_stride)
    starts = np.arange(num_frames, dtype=np.int64) * S
    ends = np.minimum(starts + S, num_samples)
    size = np.maximum(ends - starts, 0)  # clipped frame lengths (0 past the audio)
    for seg in segments:
        if hasattr(seg, "label"):
            a, b, lab = seg.start, seg.end, seg.label
        else:
            a, b, lab = seg
        col = label_index[lab]
        a, b = max(int(a), 0), min(int(b), num_samples)
        if b <= a or num_frames == 0:
            continue
        k0, k1 = a // S, min((b - 1) // S, num_frames - 1)
        if k0 > k1:
            continue
        ks = slice(k0, k1 + 1)
        overlap = np.minimum(b, ends[ks]) - np.maximum(a, starts[ks])
        W[ks, col] += np.maximum(overlap, 0)
    nz = size > 0
    W[nz] /= size[nz, None]
    return torch.from_numpy(W).to(dtype)

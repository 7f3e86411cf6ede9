"""Length-bucketed batches under a padded-audio budget, and the loader that fills them.

A batch of ``B`` utterances padded to the longest, ``N`` samples, costs ``B * N / rate`` seconds
of padded audio; batches are formed from utterances sorted by length (so padding is small) and
never exceed the budget (an utterance longer than the budget gets a batch of its own).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from .alignments import AlignmentError, read_alignment
from .audio import AudioError, load_audio_with_info, resampled_length
from .readers import Utterance


def length_buckets(lengths: Sequence[int], budget_samples: int) -> List[List[int]]:
    """Indices of ``lengths`` grouped into batches with ``len(batch) * max(length) <= budget_samples``.

    Longest first (the first batch shows the peak memory at once); deterministic.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, cur, cur_max = [], [], 0
    for i in order:
        n = max(int(lengths[i]), 1)
        new_max = max(cur_max, n)
        if cur and (len(cur) + 1) * new_max > budget_samples:
            batches.append(cur)
            cur, new_max = [], n
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


@dataclass
class LoadedUtterance:
    uid: str
    waveform: Optional[torch.Tensor]  # [N] float32 at the model rate; None when skipped
    segments: Optional[list] = None  # Segment list in samples at the model rate
    error: Optional[str] = None
    path: str = ""
    source_rate: int = 0  # the file's own sample rate (resampled when it differs from the model's)
    channels: int = 1  # the file's channel count (averaged to mono when > 1)


class BatchDataset(torch.utils.data.Dataset):
    """Item ``i`` = list of :class:`LoadedUtterance` for batch ``i`` (for a DataLoader with
    ``batch_size=None``; loading runs in its worker processes)."""

    def __init__(self, batches: List[List[Utterance]], target_rate: int, *, with_alignments: bool,
                 tier: Optional[str] = None, label_map: Optional[Callable] = None, allow_resample: bool = True):
        self.batches = batches
        self.target_rate = target_rate
        self.with_alignments = with_alignments
        self.tier = tier
        self.label_map = label_map
        self.allow_resample = allow_resample

    def __len__(self) -> int:
        return len(self.batches)

    def load(self, u: Utterance) -> LoadedUtterance:
        try:
            wav, rate, channels = load_audio_with_info(u.audio, self.target_rate, allow_resample=self.allow_resample)
        except AudioError as e:
            return LoadedUtterance(u.uid, None, error=str(e), path=u.audio)
        segs = None
        if self.with_alignments and u.alignment:  # an utterance without one: segments None
            try:
                segs = read_alignment(u.alignment, file_rate=u.sample_rate, target_rate=self.target_rate,
                                      tier=self.tier, label_map=self.label_map)
            except AlignmentError as e:
                return LoadedUtterance(u.uid, None, error=str(e), path=str(u.alignment))
        return LoadedUtterance(u.uid, wav, segs, path=u.audio, source_rate=rate, channels=channels)

    def __getitem__(self, i):
        t0 = time.perf_counter()
        items = [self.load(u) for u in self.batches[i]]
        return items, time.perf_counter() - t0


def plan_batches(utterances: Sequence[Utterance], target_rate: int, budget_seconds: float) -> List[List[Utterance]]:
    lengths = [resampled_length(u.num_samples, u.sample_rate, target_rate) for u in utterances]
    budget = max(int(budget_seconds * target_rate), 1)  # 0: every utterance in a batch of its own
    return [[utterances[i] for i in b] for b in length_buckets(lengths, budget)]

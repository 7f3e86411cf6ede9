"""Training data for ``satkern pretrain``: a corpus split's features, extracted once, and a
deterministic batch order.

* :func:`training_utterances` -- the utterances of the split (``DIR/TRAIN`` when ``DIR`` has one),
  with clear errors for a folder without audio or without phone alignments.
* :func:`extract_all` -- the model's own features (``S3prlFeatures``: log-mel + CMVN for the
  built-in configs) of every utterance, trimmed to whole groups of ``downsample_rate`` frames.
* :func:`epoch_batches` -- the batches of one epoch: a pure function of ``(seed, epoch)``, so a
  resumed run knows its data order from ``(epoch, index in epoch)`` alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch

from ..corpus.audio import AudioError, load_audio
from ..corpus.readers import Utterance, discover_corpus

# utterances are sorted by length inside shuffled pools of this many, so a batch holds
# utterances of similar length (little padding) while the order stays random
SORT_POOL = 64


def training_utterances(corpus: str, split: str = "TRAIN") -> Tuple[List[Utterance], str]:
    """``(utterances, folder read)`` of ``corpus/split`` (or of ``corpus`` itself when it has no
    ``split`` subfolder). The corpus must have audio and phone alignments."""
    root = Path(corpus)
    if not root.exists():
        raise FileNotFoundError(f"--corpus {corpus}: no such folder")
    if root.is_dir() and split and (root / split).is_dir():
        root = root / split
    found = discover_corpus(root)
    if not found.utterances:
        reasons = "; ".join(sorted({s["reason"] for s in found.skipped})[:3])
        raise ValueError(f"--corpus {corpus}: no readable audio found in {root}" + (f" ({reasons})" if reasons else ""))
    if not found.has_alignments:
        raise ValueError(f"--corpus {corpus}: no phone alignments (.PHN or TextGrid) found in {root}; satkern "
                         f"pretrain expects an aligned corpus such as scripts/make_synth_corpus.py writes")
    return sorted(found.utterances, key=lambda u: u.uid), str(root)


def extract_all(features, utterances: Sequence[Utterance], downsample_rate: int, progress: bool = False
                ) -> Tuple[List[torch.Tensor], List[str]]:
    """``(features [T_i, F] float32 per kept utterance, uids)``; ``T_i`` a multiple of
    ``downsample_rate``. Unreadable files are skipped (listed in the second return's complement)."""
    from tqdm import tqdm

    feats, uids = [], []
    for u in tqdm(utterances, desc="features", disable=not progress, leave=False):
        try:
            wav = load_audio(u.audio, features.sample_rate)
        except AudioError:
            continue
        f = features.extract_one(wav).to(torch.float32)
        keep = f.shape[0] // downsample_rate * downsample_rate
        if keep < downsample_rate:
            continue
        feats.append(f[:keep].contiguous())
        uids.append(u.uid)
    if not feats:
        raise ValueError("no utterance of the corpus gave features (all unreadable or too short)")
    return feats, uids


def epoch_batches(frame_lengths: Sequence[int], max_frames: int, seed: int, epoch: int) -> List[List[int]]:
    """Batches (lists of utterance indices) of one epoch. ``max_frames``: padded feature frames
    per batch (batch size x longest utterance); an utterance longer than that is a batch alone."""
    rng = np.random.RandomState((int(seed) * 1_000_003 + int(epoch)) % (2 ** 32))
    order = rng.permutation(len(frame_lengths))
    batches: List[List[int]] = []
    for p in range(0, len(order), SORT_POOL):
        pool = sorted(order[p:p + SORT_POOL].tolist(), key=lambda i: (frame_lengths[i], i))
        cur: List[int] = []
        longest = 0
        for i in pool:
            n = frame_lengths[i]
            if cur and max(longest, n) * (len(cur) + 1) > max_frames:
                batches.append(cur)
                cur, longest = [], 0
            cur.append(i)
            longest = max(longest, n)
        if cur:
            batches.append(cur)
    return [batches[j] for j in rng.permutation(len(batches)).tolist()]


def collate(feats: Sequence[torch.Tensor], idx: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(padded [B, T, F], lengths [B])`` of the utterances ``idx``."""
    chosen = [feats[i] for i in idx]
    lengths = torch.tensor([f.shape[0] for f in chosen], dtype=torch.int64)
    out = chosen[0].new_zeros((len(chosen), int(lengths.max()), chosen[0].shape[1]))
    for b, f in enumerate(chosen):
        out[b, :f.shape[0]] = f
    return out, lengths

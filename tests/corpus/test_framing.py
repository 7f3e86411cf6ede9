"""Histogram framing of sample-level phone segments (METRICS.md, "Downsampled models")."""
import numpy as np
import pytest
import torch

from satkern.corpus import Segment, frame_label_weights


def _naive(segments, num_samples, S, num_frames, index):
    """Per-sample label histogram, the rule written out sample by sample."""
    Y = max(index.values()) + 1
    per_sample = np.zeros((num_samples, Y))
    for a, b, lab in segments:
        per_sample[max(a, 0):min(b, num_samples), index[lab]] += 1
    W = np.zeros((num_frames, Y))
    for k in range(num_frames):
        lo, hi = k * S, min((k + 1) * S, num_samples)
        if hi > lo:
            W[k] = per_sample[lo:hi].sum(0) / (hi - lo)
    return W


def test_hand_checked_docstring_case():
    # S = 4, 10 samples: frames [0,4) [4,8) [8,10) (the last clipped to 2 samples)
    W = frame_label_weights([(0, 3, "a"), (3, 10, "b")], 10, 4, 3, {"a": 0, "b": 1})
    expected = torch.tensor([[0.75, 0.25], [0.0, 1.0], [0.0, 1.0]])
    assert torch.equal(W, expected), W


def test_gaps_and_clipped_last_frame():
    index = {"a": 0, "b": 1, "c": 2}
    # gap [5, 9) unlabelled; segment c runs past the audio's end (clipped to 13 samples)
    segs = [Segment(0, 5, "a"), Segment(9, 11, "b"), Segment(11, 20, "c")]
    W = frame_label_weights(segs, 13, 5, 3, index)
    expected = torch.tensor([[1.0, 0.0, 0.0],            # [0,5): all a
                             [0.0, 1 / 5, 0.0],          # [5,10): 4 unlabelled samples, 1 of b
                             [0.0, 1 / 3, 2 / 3]])       # [10,13): clipped to 3 samples: 1 b, 2 c
    assert torch.allclose(W, expected.to(W.dtype)), W
    # a row with no labelled sample is all zero
    W = frame_label_weights([(0, 4, "a")], 20, 4, 5, index)
    assert W[1:].abs().sum() == 0 and W[0, 0] == 1


def test_more_frames_than_audio_and_fewer():
    index = {"a": 0}
    # the model says 4 frames but the audio covers 2.5 of them: frame 3 starts past the end -> zero row
    W = frame_label_weights([(0, 10, "a")], 10, 4, 4, index)
    assert W.tolist() == [[1.0], [1.0], [1.0], [0.0]]
    # the model drops the tail (conv receptive field): samples past the last frame are unused
    W = frame_label_weights([(0, 10, "a")], 10, 4, 1, index)
    assert W.tolist() == [[1.0]]
    assert frame_label_weights([(0, 10, "a")], 10, 4, 0, index).shape == (0, 1)


def test_unknown_label_and_bad_stride():
    with pytest.raises(KeyError):
        frame_label_weights([(0, 4, "z")], 4, 2, 2, {"a": 0})
    with pytest.raises(ValueError):
        frame_label_weights([(0, 4, "a")], 4, 0, 2, {"a": 0})


@pytest.mark.parametrize("seed", range(5))
def test_random_against_sample_by_sample(seed):
    rng = np.random.default_rng(seed)
    S = int(rng.integers(1, 400))
    n = int(rng.integers(1, 20000))
    labels = ["a", "b", "c", "d"]
    index = {l: i for i, l in enumerate(labels)}
    cuts = np.sort(rng.integers(0, n + 50, size=12))
    segs = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if rng.random() < 0.8:  # leave gaps
            segs.append((int(a), int(b), labels[int(rng.integers(0, 4))]))
    T = int(rng.integers(max(n // S - 2, 0), n // S + 3))
    W = frame_label_weights(segs, n, S, T, index, dtype=torch.float64).numpy()
    ref = _naive(segs, n, S, T, index)
    assert np.abs(W - ref).max() < 1e-12, np.abs(W - ref).max()
    assert (W.sum(1) <= 1 + 1e-12).all()

"""Probe features against independent eager runs; reconstruction L1; determinism; skipped tasks."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from satkern.models.s3prl.model import padding_bias, stack_frames
from satkern.rank.curves import RankSetup
from satkern.rank.probes import (TaskSkipped, extract_probe_features, frame_phone_labels, phone_probe,
                                 reconstruction_l1, speaker_frame_probe, speaker_utterance_probe)

ATOL = 1e-4  # float32 features of LayerNorm-ed layers (values of order 1), patched vs eager


def _eager_band_attend(module, r, mode):
    """Eager attention with every head limited to abs(q - k) <= r (METRICS.md sec. 7.2)."""

    def attend(q, k, v, lengths):
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        scores = scores + padding_bias(lengths, q.shape[-2], scores.dtype)
        T = q.shape[-2]
        band = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs() <= r
        if mode == "renorm":
            scores = scores.masked_fill(~band, float("-inf"))
        A = torch.softmax(scores, dim=-1)
        if mode == "zero":
            A = A * band
        return torch.matmul(A, v)

    return attend


def _eager_features(sm, utterances, *, pruned=(), span=None, mode="zero", head=None):
    """Last-layer valid frames per utterance (each alone, unpatched model) and the reconstruction sums."""
    model = sm.model
    mask = torch.ones(model.num_layers, model.num_heads)
    for l, h in pruned:
        mask[l, h] = 0.0
    mods = model.attention_modules()
    if span is not None:
        for m in mods:
            m.attend = _eager_band_attend(m, span, mode)
    frames, abs_sum, count = [], 0.0, 0
    try:
        with torch.no_grad():
            for u in utterances:
                feats, n = model.extract_features([u.waveform])
                R = model.downsample_rate
                n = int(n[0]) // R * R
                feats = feats[:, :n]
                out = model(feats, torch.tensor([n]), head_mask=mask)
                T = int(out.lengths[0])
                frames.append(out.last_hidden_state[0, :T])
                if head is not None:
                    pred = head(out.last_hidden_state)[0][0, :T]
                    target = stack_frames(feats, R)[0, :T]
                    abs_sum += float((pred.double() - target.double()).abs().sum())
                    count += pred.numel()
    finally:
        for m in mods:
            m.__dict__.pop("attend", None)
    return frames, abs_sum, count


@pytest.mark.parametrize("case", [dict(pruned=()), dict(pruned=[(0, 1), (1, 0), (1, 3)]),
                                  dict(pruned=[(l, h) for l in range(2) for h in range(4)]),
                                  dict(span=2, mode="zero"), dict(span=3, mode="renorm")])
def test_features_equal_eager_refined_model(speech_model, splits, case):
    train, _ = splits
    utts = train[:5]
    pk = {"prune": set(case.get("pruned", ())) or None}
    if "span" in case:
        pk.update(span=case["span"], span_mode=case["mode"])
    f = extract_probe_features(speech_model, utts, patch_kwargs=pk, batch_seconds=6.0)  # batches of 2-3
    want, _, _ = _eager_features(speech_model, utts, pruned=case.get("pruned", ()), span=case.get("span"),
                                 mode=case.get("mode", "zero"))
    for got, ref in zip(f.frames, want):
        assert got.shape == ref.shape
        err = float((got - ref).abs().max())
        assert err < ATOL, f"max abs error {err:.3g}"


def test_layer_cache_gives_the_same_features(speech_model, splits):
    train, test = splits
    cached = RankSetup(speech_model, train[:6], test[:3], tasks=["phone"], cache_layers=True, batch_seconds=6.0)
    plain = RankSetup(speech_model, train[:6], test[:3], tasks=["phone"], cache_layers=False, batch_seconds=6.0)
    cached.features("train", {"prune": None})  # fills the inputs of every layer
    for pk in ({"prune": {(1, 2)}}, {"prune": {(0, 0), (1, 1)}}, {"prune": None, "span": 1, "span_mode": "zero"}):
        a = cached.features("train", pk)
        b = plain.features("train", pk)
        for x, y in zip(a.frames, b.frames):
            assert torch.equal(x, y)
    assert set(cached._layer_cache["train"][next(iter(cached._layer_cache["train"]))]) == {0, 1}


def test_reconstruction_equals_eager(checkpoint, splits):
    from satkern.models import load_model
    from satkern.models.s3prl.spec_head import load_spec_head

    sm = load_model(str(checkpoint))
    head = load_spec_head(checkpoint, sm.model)
    assert head is not None
    _, test = splits
    for pruned in ((), [(0, 0), (1, 2)]):
        f = extract_probe_features(sm, test, patch_kwargs={"prune": set(pruned) or None}, spec_head=head,
                                   batch_seconds=8.0)
        _, s, n = _eager_features(sm, test, pruned=pruned, head=head)
        got, want = reconstruction_l1(f), s / n
        assert f"{got:.5g}" == f"{want:.5g}", (got, want)
        assert abs(got - want) <= 5e-6 * abs(want)


def test_frame_phone_labels_majority_rule():
    idx = {"a": 0, "b": 1, "c": 2}
    # S = 4: frame 0 = [0,4): a 3, b 1 -> a; frame 1 = [4,8): b 2, c 2 -> tie -> b (smaller index);
    # frame 2 = [8,12): nothing labelled -> -1
    segs = [(0, 3, "a"), (3, 6, "b"), (6, 8, "c")]
    assert frame_phone_labels(segs, 12, 4, 3, idx).tolist() == [0, 1, -1]


def _subset(f, idx):
    g = copy.copy(f)
    g.frames = [f.frames[i] for i in idx]
    g.phones = None if f.phones is None else [f.phones[i] for i in idx]
    g.speakers = None if f.speakers is None else [f.speakers[i] for i in idx]
    g.uids = [f.uids[i] for i in idx]
    return g


@pytest.fixture(scope="module")
def features(speech_model, splits):
    train, test = splits
    utts = train + test
    f = extract_probe_features(speech_model, utts)
    return _subset(f, range(len(train))), _subset(f, range(len(train), len(utts)))


def test_probes_are_deterministic(features):
    tr, te = features
    for probe in (phone_probe, speaker_frame_probe, speaker_utterance_probe):
        a = probe(tr, te, seed=3, steps=40)
        b = probe(tr, te, seed=3, steps=40)
        assert a == b and 0.0 <= a <= 1.0
    assert torch.initial_seed() is not None  # the global RNG was not reseeded by the probes


def test_probes_learn_something(features):
    tr, te = features
    # the tiny random model's frames still carry the speaker (3 festival voice settings): a trained probe
    # must beat chance (1/2 speakers) clearly on the frames it was trained on
    acc = speaker_frame_probe(tr, tr, seed=0, steps=200)
    assert acc > 0.6


def test_missing_speakers_phones_and_no_overlap_skip(features):
    tr, te = features
    no_spk = copy.copy(te)
    no_spk.speakers = None
    with pytest.raises(TaskSkipped, match="no speaker"):
        speaker_frame_probe(tr, no_spk)
    other = copy.copy(te)
    other.speakers = ["SOMEONE_ELSE"] * len(te.frames)
    with pytest.raises(TaskSkipped, match="no test speaker appears in the train split"):
        speaker_utterance_probe(tr, other)
    no_phones = copy.copy(te)
    no_phones.phones = None
    with pytest.raises(TaskSkipped, match="no phone alignments"):
        phone_probe(tr, no_phones)
    with pytest.raises(TaskSkipped, match="pre-training head"):
        reconstruction_l1(te)
    with pytest.raises(ValueError, match="steps"):
        phone_probe(tr, te, steps=0)

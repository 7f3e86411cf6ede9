"""The shipped trained SATs (sat-mini-m3/m6/m9): load safely, resolve by name, reproduce their
recorded metrics on a committed fixture utterance."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from satkern.corpus.audio import load_audio
from satkern.models import build, load_model, names
from satkern.models.trained import RECORDED_METRICS, TRAINED_MODELS, WEIGHTS_DIR, trained_path
from satkern.pretrain.evaluate import fixture_metrics
from satkern.models.s3prl.spec_head import load_spec_head

ROOT = Path(__file__).resolve().parent.parent.parent
RECORD = json.loads(RECORDED_METRICS.read_text())["models"]
SIZE_LIMIT_BYTES = 15_000_000  # all shipped checkpoints together (issue 9)


def test_every_registered_model_is_recorded_and_small():
    assert set(TRAINED_MODELS) == set(RECORD)
    total = sum((WEIGHTS_DIR / f).stat().st_size for f in TRAINED_MODELS.values())
    assert total <= SIZE_LIMIT_BYTES, total
    assert set(TRAINED_MODELS) <= set(names())


@pytest.mark.parametrize("name", sorted(TRAINED_MODELS))
def test_shipped_checkpoint_loads_with_weights_only_and_is_float16(name):
    path = trained_path(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == RECORD[name]["sha256"]
    states = torch.load(path, weights_only=True)  # no allow-list needed: tensors and containers only
    assert "Optimizer" not in states
    for key in ("Transformer", "SpecHead"):
        assert all(v.dtype == torch.float16 for v in states[key].values() if v.is_floating_point())
    cfg = states["Upstream_Config"]
    assert cfg["task"]["mask_consecutive_min"] == RECORD[name]["mask_consecutive"]
    t = cfg["transformer"]
    heads = t["num_hidden_layers"] * t["num_attention_heads"]
    assert heads >= 48 and t["hidden_size"] // t["num_attention_heads"] >= 32  # the GPU backends run them


@pytest.mark.parametrize("name", sorted(TRAINED_MODELS))
def test_names_resolve_with_trained_weights(name):
    sm = load_model(name)
    assert sm.random_weights is False and sm.name == name and sm.family == "s3prl"
    assert all(p.dtype == torch.float32 for p in sm.model.parameters())
    m = build(name)
    assert getattr(m, "random_weights", None) is False
    for (ka, a), (kb, b) in zip(sm.model.state_dict().items(), m.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    with pytest.raises(ValueError, match="no overrides"):
        build(name, num_hidden_layers=2)


@pytest.mark.parametrize("name", sorted(TRAINED_MODELS))
def test_shipped_checkpoint_reproduces_recorded_fixture_metrics(name):
    rec = RECORD[name]
    sm = load_model(name)
    head = load_spec_head(trained_path(name), sm.model)
    wav = load_audio(ROOT / rec["fixture_utterance"], sm.sample_rate)
    got = fixture_metrics(sm.model, head, wav, rec["mask_consecutive"])
    want = rec["fixture_metrics"]
    assert got["frames"] == want["frames"]
    for key in ("last_hidden_mean_abs", "masked_l1", "mean_frame_l1"):
        assert got[key] == pytest.approx(want[key], abs=1e-4), key
    assert torch.allclose(torch.tensor(got["last_hidden_first_frame_head"]),
                          torch.tensor(want["last_hidden_first_frame_head"]), atol=1e-4, rtol=0)
    assert torch.allclose(torch.tensor(got["mean_attention_distance"]), torch.tensor(want["mean_attention_distance"]),
                          atol=1e-4, rtol=0)

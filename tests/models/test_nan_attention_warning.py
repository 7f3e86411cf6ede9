"""A NaN query row poisons its head's colmass, G and V (as the definitions give): satkern.patch warns
once, naming layer and head, Patch.nan_heads says where, and the corpus job counts the utterances."""
import warnings
from pathlib import Path

import torch

import satkern
from satkern.analysis import AnalyzeConfig, analyze
from satkern.models import load_model

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
LAYER, HEAD = 1, 2


def _poisoned(name="tiny-tera"):
    torch.manual_seed(0)
    sm = load_model(name)
    att = sm.model.encoder.layer[LAYER].attention.self
    d = att.attention_head_size
    with torch.no_grad():
        att.query.weight[HEAD * d:(HEAD + 1) * d] = float("nan")  # every query row of that one head
    return sm


def test_patch_warns_once_naming_layer_and_head():
    sm = _poisoned()
    g = torch.Generator().manual_seed(1)
    waves = [torch.randn(4000, generator=g) * 0.1, torch.randn(2500, generator=g) * 0.1]
    inputs, _ = sm.prepare(waves)
    with satkern.patch(sm) as h:
        with torch.inference_mode():
            sm(inputs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = h.metrics
            h.metrics  # read again: no second warning
            with torch.inference_mode():
                sm(inputs)
            h.metrics
    nan_warnings = [w for w in caught if "NaN in the attention" in str(w.message)]
    assert len(nan_warnings) == 1, [str(w.message) for w in caught]
    assert f"layer {LAYER} head {HEAD}" in str(nan_warnings[0].message)
    bad = h.nan_heads
    assert bad.shape == (4, 2, 4)
    want = torch.zeros_like(bad)
    want[:, LAYER, HEAD] = True
    assert torch.equal(bad, want)
    assert torch.isnan(m.V[:, LAYER, HEAD]).all() and torch.isnan(m.G[:, LAYER, HEAD]).all()
    assert not torch.isnan(m.G[:, 0]).any()  # the layer before is untouched


def test_no_warning_without_nan():
    torch.manual_seed(0)
    sm = load_model("tiny-tera")
    inputs, _ = sm.prepare([torch.randn(4000) * 0.1])
    with satkern.patch(sm) as h:
        with torch.inference_mode():
            sm(inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h.metrics
    assert not h.nan_heads.any()


def test_job_counts_utterances_with_nan_attention(tmp_path):
    s = analyze(AnalyzeConfig(model="tiny-tera", corpus=str(FIXTURE), out=str(tmp_path / "o"), max_utterances=3,
                              progress=False), model=_poisoned())
    assert s["counts"]["utterances_with_nan_attention"] == 3
    assert [r["heads"] for r in s["nan_attention"]] == [[[LAYER, HEAD]]] * 3

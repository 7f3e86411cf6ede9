"""satkern.models.build / load_model / SpeechModel."""
import pytest
import torch

import transformers  # noqa: E402,F401  (a test dependency: requirements-dev.txt)

import satkern  # noqa: E402
from satkern.models import S3PRL_NAMES, SpeechModel, build, load_model, names  # noqa: E402
from satkern.models import hf as hf_models  # noqa: E402

HF_STANDARD = [n for n in hf_models.names() if not n.startswith("tiny-")]
HF_TINY = [n for n in hf_models.names() if n.startswith("tiny-")]
# name -> (layers, hidden, heads) of the published base/large/tiny checkpoints
SIZES = {"hubert-base": (12, 768, 12), "wav2vec2-base": (12, 768, 12), "wav2vec2-large": (24, 1024, 16),
         "wavlm-base": (12, 768, 12), "data2vec-audio-base": (12, 768, 12), "unispeech-sat-base": (12, 768, 12),
         "sew-tiny": (12, 256, 4), "wav2vec2-conformer-base": (12, 768, 12)}


def test_names_cover_the_interface():
    want = set(SIZES) | set(S3PRL_NAMES)
    assert want <= set(names())
    assert {"tiny-" + n for n in want} <= set(names())


@pytest.mark.parametrize("name", HF_STANDARD)
def test_standard_configs(name):
    cfg = hf_models.config_for(name)
    layers, hidden, heads = SIZES[name]
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (layers, hidden, heads)
    assert hf_models.conv_stride(cfg) == 320  # 16 kHz -> 50 frames/s
    if name == "hubert-base":  # one standard size actually built (the others differ only in config)
        model = build(name)
        assert sum(p.numel() for p in model.parameters()) > 90e6
        assert not model.training


@pytest.mark.parametrize("name", HF_TINY)
def test_tiny_hf_builds_and_runs(name):
    sm = load_model(name)
    assert isinstance(sm, SpeechModel) and sm.random_weights and sm.family == "hf"
    assert sm.sample_rate == 16000
    assert sm.frame_stride == (640 if "sew" in name else 320)
    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(n, generator=g) for n in (12000, 7000)]
    inputs, frames = sm.prepare(waves)
    with satkern.patch(sm, stats=("entropy",), backend="auto") as h:
        with torch.no_grad():
            out = sm.model(**inputs).last_hidden_state
    assert torch.isfinite(out).all()
    assert h.lengths.tolist() == frames.tolist()
    assert [sm.num_frames(len(w)) for w in waves][0] == int(frames[0])  # the longest is unpadded


def test_load_model_from_hf_dir_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model = build("tiny-hubert-base")
    model.save_pretrained(tmp_path)
    sm = load_model(str(tmp_path))
    assert sm.family == "hf" and not sm.random_weights and type(sm.model).__name__ == "HubertModel"
    a, b = model.state_dict(), sm.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    waves = [torch.randn(8000), torch.randn(5000)]
    inputs, _ = sm.prepare(waves)
    with torch.no_grad():
        torch.testing.assert_close(sm.model(**inputs).last_hidden_state, model(**inputs).last_hidden_state)


def test_load_model_errors(tmp_path):
    with pytest.raises(ValueError, match="built-in name"):
        load_model("no-such-model")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ValueError, match="unknown model name"):
        build("hubert-huge")


@pytest.mark.parametrize("name", list(S3PRL_NAMES) + ["tiny-" + n for n in S3PRL_NAMES])
def test_s3prl_names(name):
    model = build(name)
    assert not model.training
    if name.startswith("tiny-"):
        sm = load_model(name)
        assert sm.family == "s3prl" and sm.random_weights
        g = torch.Generator().manual_seed(0)
        inputs, frames = sm.prepare([torch.randn(8000, generator=g), torch.randn(5000, generator=g)])
        with satkern.patch(sm, backend="auto") as h:
            with torch.no_grad():
                sm.model(**inputs)
        assert h.lengths.tolist() == frames.tolist()
        assert h.metrics.G.shape[:1] == (2,)


@pytest.mark.parametrize("name", ["tiny-mockingjay-base", "tiny-tera-base", "tiny-audio-albert-base"])
def test_s3prl_patch_equals_eager_and_metrics_match_maps(name):
    from satkern.metrics import head_metrics_from_map

    torch.manual_seed(0)
    sm = load_model(name)
    g = torch.Generator().manual_seed(1)
    inputs, frames = sm.prepare([torch.randn(n, generator=g) for n in (9000, 6000, 3000)])
    model = sm.model
    with torch.no_grad():
        ref = model(**inputs, output_attentions=True)
    attends = [m for m in model.modules() if type(m).__name__ == "S3prlSelfAttention"]
    with satkern.patch(model, backend="auto") as h:
        assert all("attend" in m.__dict__ for m in attends)
        with torch.no_grad():
            out = model(**inputs).last_hidden_state
    assert all("attend" not in m.__dict__ for m in attends)
    err = ((out - ref.last_hidden_state).abs().max() / ref.last_hidden_state.abs().max()).item()
    assert err <= 1e-5, f"{name}: output worst relative error {err:.3g}"
    L = model.config.num_hidden_layers
    assert h.num_layers == L and h.metrics.G.shape == (3, L, model.config.num_attention_heads)
    assert h.lengths.tolist() == frames.tolist()
    for l, a in enumerate(ref.attentions):
        want = head_metrics_from_map(a, h.lengths)
        for f in "GVDW":
            e = (getattr(h.metrics, f)[:, l].double() - getattr(want, f)).abs().max().item()
            assert e <= 2e-5 * max(1.0, getattr(want, f).abs().max().item()), f"{name} layer {l} {f}: {e:.3g}"


def test_s3prl_training_dropout_refused():
    model = build("tiny-tera-base", attention_probs_dropout_prob=0.1)
    inputs, _ = load_model("tiny-tera-base").prepare([torch.randn(4000)])
    model.train()
    with satkern.patch(model, backend="auto"):
        with pytest.raises(RuntimeError, match="training mode with attention dropout"):
            model(**inputs)


@pytest.mark.parametrize("name", ["tiny-hubert-base", "tiny-wav2vec2-base"])
def test_group_norm_front_end_batched_equals_alone(name):
    """SpeechModel.forward runs GroupNorm feature encoders per utterance: a padded batch gives each
    utterance exactly what it gives alone (plain model(**inputs) does not)."""
    sm = load_model(name)
    assert sm.model.config.feat_extract_norm == "group"
    g = torch.Generator().manual_seed(1)
    waves = [torch.randn(n, generator=g) for n in (16000, 6000, 9100)]
    inputs, frames = sm.prepare(waves)
    with torch.no_grad():
        batched = sm.forward(inputs).last_hidden_state
        naive = sm.model(**inputs).last_hidden_state
        naive_err, err = 0.0, 0.0
        for i, w in enumerate(waves):
            one_inputs, one_frames = sm.prepare([w])
            alone = sm.forward(one_inputs).last_hidden_state[0]
            n = int(frames[i])
            assert n == int(one_frames[0])
            err = max(err, float((batched[i, :n] - alone[:n]).abs().max()))
            naive_err = max(naive_err, float((naive[i, :n] - alone[:n]).abs().max()))
    assert err < 1e-5, f"batched vs alone: {err:.2e}"
    assert naive_err > 100 * max(err, 1e-7), "the test model does not show the GroupNorm padding effect"
    assert "forward" not in vars(sm.model.feature_extractor)  # the per-utterance wrapper is gone

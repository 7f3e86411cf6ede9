"""satkern.patch on transformers models that route through AttentionInterface.

Reference: the same model with ``attn_implementation="eager"`` (its own per-head maps via
``output_attentions=True``); for refinement (pruning, spans) an eager attention written
here, registered with transformers under a test name, that applies the refinement to the
eager map. Tiny configs, float32, CPU.
"""
import pytest
import torch

import transformers  # noqa: E402,F401  (a test dependency: requirements-dev.txt)
import transformers  # noqa: E402
from transformers import AttentionInterface  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface, eager_mask  # noqa: E402

import satkern  # noqa: E402
from satkern.metrics import head_metrics_from_map  # noqa: E402
from satkern.models import build  # noqa: E402
from satkern.patching import lengths_from_mask  # noqa: E402
from satkern.patching.hf import find_modules  # noqa: E402

from patch_helpers import (BACKEND, SAMPLES, assert_close_rel,  # noqa: E402
                           assert_training_dropout_refused, batch, rel_err)

INTERFACE_NAMES = ["tiny-hubert-base", "tiny-wav2vec2-base", "tiny-wav2vec2-large", "tiny-data2vec-audio-base",
                   "tiny-unispeech-sat-base", "tiny-sew-tiny", "tiny-wav2vec2-conformer-base"]


def tiny_unispeech():
    cfg = transformers.UniSpeechConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=4)
    return transformers.UniSpeechModel._from_config(cfg, attn_implementation="eager").eval()


def make(name):
    torch.manual_seed(0)
    if name == "tiny-unispeech":
        return tiny_unispeech()
    return build(name, attn_implementation="eager")


def snapshot(model):
    """Everything removal must restore: parameters/buffers (values and storage), every module's
    attribute dict (names and the identity of each value), hooks, and the configs."""
    state = {k: (v.detach().clone(), v.data_ptr()) for k, v in model.state_dict().items()}
    attrs = {}
    for name, m in model.named_modules():
        attrs[name] = (type(m), {k: (id(v), repr(v) if isinstance(v, (int, float, str, bool, type(None))) else "")
                                 for k, v in m.__dict__.items()})
    configs = {}
    for name, m in model.named_modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            configs[name] = (cfg.to_dict(), cfg._attn_implementation_internal, sorted(vars(cfg)))
    return state, attrs, configs


def assert_same_snapshot(a, b):
    sa, aa, ca = a
    sb, ab, cb = b
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k][0], sb[k][0]) and sa[k][1] == sb[k][1], f"state {k} changed"
    assert aa == ab, "module attributes changed"
    assert ca == cb, "config changed"


# ------------------------------------------------------------------ eager reference with refinement
REF = "satkern_test_eager"
_REF_STATE = {}  # module -> layer; "prune", "span", "span_mode", "maps"


def ref_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, position_bias=None,
                  **kwargs):
    """Eager attention (float32, as the models do) with the refinement applied to its map."""
    layer = _REF_STATE["layers"][module]
    B, H, T, D = query.shape
    s = torch.matmul(query, key.transpose(2, 3)) * (D ** -0.5 if scaling is None else scaling)
    if position_bias is not None:
        s = s + position_bias
    lengths = lengths_from_mask(attention_mask, B, T)
    if lengths is None:
        lengths = torch.full((B,), T)
    idx = torch.arange(T)
    key_ok = (idx[None, :] < lengths[:, None])[:, None, None, :]
    span = _REF_STATE["span"]
    span = span.get(layer) if isinstance(span, dict) else span
    band = None if span is None else ((idx[:, None] - idx[None, :]).abs() <= span)
    admissible = key_ok if (band is None or _REF_STATE["span_mode"] == "zero") else key_ok & band
    a = torch.softmax(s.masked_fill(~admissible, float("-inf")), dim=-1).nan_to_num(0.0)
    _REF_STATE["maps"].append(a.detach().clone())  # the distribution the statistics describe
    if band is not None and _REF_STATE["span_mode"] == "zero":
        a = a * band
    for (l, h) in _REF_STATE["prune"]:
        if l == layer:
            a[:, h] = 0
    return torch.matmul(a, value).transpose(1, 2).contiguous(), a


AttentionInterface.register(REF, ref_attention)
AttentionMaskInterface.register(REF, eager_mask)


def reference_run(model, x, mask, prune=(), span=None, span_mode="zero"):
    _REF_STATE.update(layers={m: i for i, (_, m, _) in enumerate(find_modules(model))}, prune=set(prune),
                      span=span, span_mode=span_mode, maps=[])
    cfgs = [(c, c._attn_implementation_internal) for c in {id(m.config): m.config for m in model.modules()
                                                          if hasattr(getattr(m, "config", None), "_attn_implementation_internal")}.values()]
    for c, _ in cfgs:
        c._attn_implementation_internal = REF
    try:
        with torch.no_grad():
            out = model(x, attention_mask=mask).last_hidden_state
    finally:
        for c, v in cfgs:
            c._attn_implementation_internal = v
    return out, list(_REF_STATE["maps"])


def metrics_from_maps(maps, lengths):
    per = [head_metrics_from_map(a, lengths) for a in maps]
    return {f: torch.stack([getattr(p, f) for p in per], dim=1) for f in "GVDW"}


def assert_metrics(h, maps, what):
    want = metrics_from_maps(maps, h.lengths)
    got = h.metrics
    for f in "GVDW":
        g, w = getattr(got, f), want[f]
        assert g.shape == w.shape, f"{what} {f}: shape {tuple(g.shape)} vs {tuple(w.shape)}"
        assert torch.equal(torch.isnan(g), torch.isnan(w)), f"{what} {f}: NaN pattern differs"
        ok = ~torch.isnan(w)
        err = (g.double()[ok] - w[ok]).abs().max().item() if ok.any() else 0.0
        assert err <= 2e-5 * max(1.0, w[ok].abs().max().item()), f"{what} {f}: worst error {err:.3g}"


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", INTERFACE_NAMES + ["tiny-unispeech"])
def test_patched_equals_eager_and_metrics_match_maps(name):
    model = make(name)
    x, mask = batch()
    with torch.no_grad():
        ref = model(x, attention_mask=mask, output_attentions=True)
    before = snapshot(model)
    with satkern.patch(model, backend=BACKEND) as h:
        assert model.config._attn_implementation == "satkern"
        with torch.no_grad():
            out = model(x, attention_mask=mask).last_hidden_state
            out2 = model(x[:2], attention_mask=mask[:2]).last_hidden_state  # a second batch appends
    assert_close_rel(out, ref.last_hidden_state, f"{name} output")
    assert_same_snapshot(before, snapshot(model))
    assert h.num_layers == 2 and h.num_heads == 4
    U = len(SAMPLES) + 2
    assert h.metrics.G.shape == (U, 2, 4) and h.metrics.G.dtype == torch.float32
    assert h.lengths.dtype == torch.int64 and h.lengths.shape == (U,)
    # the model's own per-head maps, padding respected
    maps = [a.detach() for a in ref.attentions]
    want = metrics_from_maps(maps, h.lengths[:len(SAMPLES)])
    for f in "GVDW":
        g = getattr(h.metrics, f)[:len(SAMPLES)].double()
        err = (g - want[f]).abs().max().item()
        assert err <= 2e-5 * max(1.0, want[f].abs().max().item()), f"{name} {f}: worst error {err:.3g}"
    # after removal the model runs its own attention again
    with torch.no_grad():
        again = model(x, attention_mask=mask).last_hidden_state
    assert torch.equal(again, ref.last_hidden_state)
    assert out2.shape[0] == 2


@pytest.mark.parametrize("name", ["tiny-hubert-base", "tiny-wav2vec2-conformer-base", "tiny-sew-tiny"])
@pytest.mark.parametrize("refine", [
    dict(prune={(0, 1), (1, 3)}),
    dict(span=3, span_mode="zero"),
    dict(span=2, span_mode="renorm"),
    dict(span={1: 4}, span_mode="renorm", prune={(0, 0)}),
])
def test_refinement_equals_eager_with_refined_map(name, refine):
    model = make(name)
    x, mask = batch(2)
    want, maps = reference_run(model, x, mask, prune=refine.get("prune", ()), span=refine.get("span"),
                               span_mode=refine.get("span_mode", "zero"))
    with satkern.patch(model, backend=BACKEND, **refine) as h:
        with torch.no_grad():
            got = model(x, attention_mask=mask).last_hidden_state
    assert_close_rel(got, want, f"{name} {refine}")
    # statistics: of A before zeroing (zero), of the banded distribution (renorm); NaN for pruned heads
    for (l, hd) in refine.get("prune", ()):
        maps[l][:, hd] = float("nan")
    assert_metrics(h, maps, f"{name} {refine}")


def test_pruning_changes_output_and_costs_nothing_extra():
    model = make("tiny-hubert-base")
    x, mask = batch(3)
    with torch.no_grad():
        base = model(x, attention_mask=mask).last_hidden_state
    with satkern.patch(model, stats=(), prune={(1, 2)}, backend=BACKEND) as h:
        with torch.no_grad():
            pruned = model(x, attention_mask=mask).last_hidden_state
    assert rel_err(pruned, base) > 1e-3
    want, _ = reference_run(model, x, mask, prune={(1, 2)})
    assert_close_rel(pruned, want, "stats=() refinement only")
    m = h.metrics
    assert m.G is None and m.V is None and m.D is None and m.W is None
    assert h.lengths.shape == (len(SAMPLES),)


def test_prm_sums_equal_eager_maps():
    model = make("tiny-wav2vec2-base")
    x, mask = batch(4)
    with torch.no_grad():
        ref = model(x, attention_mask=mask, output_attentions=True)
    B, T = x.shape[0], ref.last_hidden_state.shape[1]
    Y = 5
    g = torch.Generator().manual_seed(5)
    W = torch.nn.functional.one_hot(torch.randint(0, Y, (B, T), generator=g), Y).float()
    with satkern.patch(model, backend=BACKEND) as h:
        h.set_labels(W)
        with torch.no_grad():
            model(x, attention_mask=mask)
            model(x, attention_mask=mask)  # labels were for one forward only
    L = h.lengths[:B]
    want = torch.zeros(2, 4, Y, Y, dtype=torch.float64)
    base = torch.zeros(Y, Y, dtype=torch.float64)
    for b in range(B):
        n = int(L[b])
        w = W[b, :n].double()
        for l, a in enumerate(ref.attentions):
            want[l] += torch.einsum("tm,htk,kn->hmn", w, a[b, :, :n, :n].double(), w) / n
        base += torch.outer(w.sum(0), w.sum(0)) / n ** 2
    err = (h.prm_counts - want).abs().max().item()
    assert err < 1e-5, f"prm_counts worst error {err:.3g}"
    assert torch.allclose(h.prm_base, base, atol=1e-12)
    assert h.prm_utterances == B
    assert h.metrics.G.shape[0] == 2 * B
    h.reset()
    assert h.prm_counts is None and h.prm_utterances == 0 and h.lengths.numel() == 0


def test_training_mode_dropout_refused():
    torch.manual_seed(0)
    model = build("tiny-hubert-base", attn_implementation="eager", attention_dropout=0.1)
    x, mask = batch()
    assert_training_dropout_refused(model, x, mask)
    with satkern.patch(model, backend=BACKEND):
        with torch.no_grad():
            model(x, attention_mask=mask)


def test_whisper_encoder_scaling_one():
    cfg = transformers.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=4, decoder_layers=1,
                                     decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                     num_mel_bins=8, max_source_positions=16, max_target_positions=16)
    torch.manual_seed(0)
    enc = transformers.WhisperModel._from_config(cfg, attn_implementation="eager").eval().encoder
    feats = torch.randn(2, 8, 32)
    with torch.no_grad():
        ref = enc(feats, output_attentions=True)
    before = snapshot(enc)
    with satkern.patch(enc, backend=BACKEND) as h:
        with torch.no_grad():
            out = enc(feats).last_hidden_state
    assert_close_rel(out, ref.last_hidden_state, "whisper encoder")
    assert_same_snapshot(before, snapshot(enc))
    assert_metrics(h, [a.detach() for a in ref.attentions], "whisper encoder")


def test_prefix_mask_checked():
    ok = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert lengths_from_mask(ok, 2, 3).tolist() == [2, 3]
    with pytest.raises(ValueError, match="not a prefix"):
        lengths_from_mask(torch.tensor([[0, 1, 1], [1, 1, 1]]), 2, 3)
    f = torch.zeros(1, 1, 3, 3)
    f[..., 2] = torch.finfo(torch.float32).min
    assert lengths_from_mask(f, 1, 3).tolist() == [2]
    causal = torch.ones(1, 1, 3, 3, dtype=torch.bool).tril()
    with pytest.raises(ValueError, match="rows differ"):
        lengths_from_mask(causal, 1, 3)


def test_patch_errors_and_double_patch():
    model = make("tiny-hubert-base")
    with pytest.raises(ValueError, match="out of range"):
        satkern.patch(model, prune={(2, 0)})
    with pytest.raises(ValueError, match="stats"):
        satkern.patch(model, stats=("entropy", "bogus"))
    with pytest.raises(TypeError, match="no supported self-attention"):
        satkern.patch(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="'backend' must be 'auto' or one of"):
        satkern.patch(model, backend="magic")
    with pytest.raises(ValueError, match="'span_mode'"):
        satkern.patch(model, span=2, span_mode="clip")
    h = satkern.patch(model, backend=BACKEND)
    with pytest.raises(RuntimeError, match="already patched"):
        satkern.patch(model)
    h.remove()
    h.remove()  # idempotent
    assert model.config._attn_implementation == "eager"


def test_speech_model_wrapper_is_accepted():
    from satkern.models import load_model

    sm = load_model("tiny-hubert-base")
    waves = [torch.randn(n) for n in SAMPLES]
    inputs, frames = sm.prepare(waves)
    with satkern.patch(sm, backend=BACKEND) as h:
        with torch.no_grad():
            sm.model(**inputs)
    assert h.lengths.tolist() == frames.tolist()
    assert frames.tolist() == [sm.num_frames(n) for n in SAMPLES]


def test_patching_core_imports_no_adapter():
    """The core (Patch, capture, refinement) knows no model family: no import of hf/s3prl, so the
    adapters import the core and never the other way round (no import circle)."""
    import ast
    import inspect

    import satkern.patching.core as core

    tree = ast.parse(inspect.getsource(core))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
            imported.update(("." * node.level) + a.name for a in node.names if not node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    bad = {m for m in imported if m.split(".")[-1] in ("hf", "s3prl") or "patching.hf" in m or "patching.s3prl" in m}
    assert not bad, f"satkern/patching/core.py imports adapters: {bad}"


def test_unsupported_model_names_what_is_supported():
    with pytest.raises(TypeError, match="found no supported self-attention module.*hubert.*Mockingjay"):
        satkern.patch(torch.nn.Linear(2, 2))

"""satkern.patch on WavLM: module-level patch with the true per-head gated relative-position bias.

Reference: the module's own computation. Its attention core
``torch_multi_head_self_attention(hidden_states, attention_mask, gated_position_bias)`` is
wrapped (test-side, per instance) to also ask torch's ``multi_head_attention_forward`` for
per-head weights (``average_attn_weights=False``; HF only returns head-averaged ones), and,
for refinement, to recompute the output from the refined per-head maps.
"""
import pytest
import torch
import torch.nn.functional as F

import transformers  # noqa: E402,F401  (a test dependency: requirements-dev.txt)

import satkern  # noqa: E402
from satkern.metrics import head_metrics_from_map  # noqa: E402
from satkern.models import build  # noqa: E402

from patch_helpers import (BACKEND, SAMPLES, assert_close_rel,  # noqa: E402
                           assert_training_dropout_refused, batch)


def make():
    torch.manual_seed(0)
    return build("tiny-wavlm-base", attn_implementation="eager")


def attention_modules(model):
    return [m for m in model.modules() if type(m).__name__ == "WavLMAttention"]


def per_head_maps(module, hidden_states, attention_mask, gated_position_bias):
    """Per-head weights [B, H, T, T] from torch's own multi-head attention with the module's weights."""
    x = hidden_states.transpose(0, 1)
    key_padding_mask = attention_mask.ne(1) if attention_mask is not None else None
    _, w = F.multi_head_attention_forward(
        x, x, x, module.embed_dim, module.num_heads, torch.empty([0]),
        torch.cat((module.q_proj.bias, module.k_proj.bias, module.v_proj.bias)), None, None, False, 0.0,
        module.out_proj.weight, module.out_proj.bias, False, key_padding_mask, need_weights=True,
        attn_mask=gated_position_bias, use_separate_proj_weight=True, q_proj_weight=module.q_proj.weight,
        k_proj_weight=module.k_proj.weight, v_proj_weight=module.v_proj.weight, average_attn_weights=False)
    return w


def reference_run(model, x, mask, prune=(), span=None, span_mode="zero"):
    """Run the unpatched model; return (output, per-layer maps the statistics describe)."""
    maps = []
    mods = attention_modules(model)

    def wrap(layer, module):
        original = module.torch_multi_head_self_attention

        def core(hidden_states, attention_mask, gated_position_bias):
            A = per_head_maps(module, hidden_states, attention_mask, gated_position_bias).nan_to_num(0.0)
            B, H, T, _ = A.shape
            idx = torch.arange(T)
            r = span.get(layer) if isinstance(span, dict) else span
            band = None if r is None else ((idx[:, None] - idx[None, :]).abs() <= r)
            if band is not None and span_mode == "renorm":  # softmax restricted to the band = renormalized
                A = A * band
                A = A / A.sum(-1, keepdim=True).where(A.sum(-1, keepdim=True) > 0, torch.ones(()))
            maps.append(A.clone())
            refined = prune or span is not None
            if not refined:
                return original(hidden_states, attention_mask, gated_position_bias)
            if band is not None and span_mode == "zero":
                A = A * band
            for (l, h) in prune:
                if l == layer:
                    A[:, h] = 0
            v = module.v_proj(hidden_states).view(B, T, H, -1).transpose(1, 2)
            out = torch.matmul(A, v).transpose(1, 2).reshape(B, T, -1)
            return module.out_proj(out), None

        module.torch_multi_head_self_attention = core

    for i, m in enumerate(mods):
        wrap(i, m)
    try:
        with torch.no_grad():
            out = model(x, attention_mask=mask).last_hidden_state
    finally:
        for m in mods:
            del m.torch_multi_head_self_attention
    return out, maps


def check_metrics(h, maps, what, prune=()):
    for (l, hd) in prune:
        maps[l][:, hd] = float("nan")
    for l, A in enumerate(maps):
        want = head_metrics_from_map(A, h.lengths)
        for f in "GVDW":
            w = getattr(want, f)
            g = getattr(h.metrics, f)[:, l].double()
            assert torch.equal(torch.isnan(g), torch.isnan(w)), f"{what} layer {l} {f}: NaN pattern"
            ok = ~torch.isnan(w)
            err = (g[ok] - w[ok]).abs().max().item() if ok.any() else 0.0
            assert err <= 2e-5 * max(1.0, w[ok].abs().max().item()), f"{what} layer {l} {f}: worst error {err:.3g}"


def snapshot(model):
    state = {k: (v.detach().clone(), v.data_ptr()) for k, v in model.state_dict().items()}
    attrs = {n: (type(m), {k: id(v) for k, v in m.__dict__.items()}) for n, m in model.named_modules()}
    return state, attrs, model.config.to_dict(), model.config._attn_implementation_internal


def test_wavlm_patched_equals_module_and_per_head_metrics():
    model = make()
    x, mask = batch()
    want, maps = reference_run(model, x, mask)
    with torch.no_grad():
        eager = model(x, attention_mask=mask).last_hidden_state
    assert torch.equal(want, eager)  # the wrapper alone changes nothing
    before = snapshot(model)
    with satkern.patch(model, backend=BACKEND) as h:
        assert "forward" in attention_modules(model)[0].__dict__
        with torch.no_grad():
            got = model(x, attention_mask=mask).last_hidden_state
    assert_close_rel(got, want, "output")
    after = snapshot(model)
    assert before[1] == after[1] and before[2:] == after[2:]
    for k in before[0]:
        assert torch.equal(before[0][k][0], after[0][k][0]) and before[0][k][1] == after[0][k][1]
    assert h.metrics.G.shape == (len(SAMPLES), 2, 4)
    check_metrics(h, maps, "wavlm")
    # heads really differ (true per-head bias, not averaged weights)
    assert (h.metrics.G[0, 0] - h.metrics.G[0, 0].mean()).abs().max() > 1e-4


@pytest.mark.parametrize("refine", [
    dict(prune={(0, 2), (1, 0)}),
    dict(span=3, span_mode="zero"),
    dict(span=2, span_mode="renorm"),
    dict(span={0: 1}, span_mode="zero", prune={(1, 1)}),
])
def test_wavlm_refinement(refine):
    model = make()
    x, mask = batch(2)
    want, maps = reference_run(model, x, mask, prune=refine.get("prune", ()), span=refine.get("span"),
                               span_mode=refine.get("span_mode", "zero"))
    with satkern.patch(model, backend=BACKEND, **refine) as h:
        with torch.no_grad():
            got = model(x, attention_mask=mask).last_hidden_state
    assert_close_rel(got, want, f"{refine}: output")
    check_metrics(h, maps, str(refine), prune=refine.get("prune", ()))


def test_wavlm_training_dropout_refused_and_stats_off():
    torch.manual_seed(0)
    model = build("tiny-wavlm-base", attn_implementation="eager", attention_dropout=0.1)
    x, mask = batch()
    assert_training_dropout_refused(model, x, mask)
    want, _ = reference_run(model, x, mask, prune={(0, 1)})
    with satkern.patch(model, stats=(), prune={(0, 1)}, backend=BACKEND) as h:
        with torch.no_grad():
            got = model(x, attention_mask=mask).last_hidden_state
    assert_close_rel(got, want, "stats=() prune output")
    assert h.metrics.G is None
    assert "forward" not in attention_modules(model)[0].__dict__

"""No host/device synchronization on the per-call path: validation, backend selection and the patch layer
read no device values (a read would make the host wait for the GPU on every layer).

``meta`` tensors have no values: any data-dependent read (``.item()``, ``bool(t)``, ``int(t)``, ``.cpu()``)
raises on them, so running the path on meta tensors proves it reads none.
"""
import pytest
import torch

import satkern
import satkern.models
from satkern.ops import dispatch
from satkern.ops.contract import validate
from satkern.ops.dispatch import select
from satkern.ops.schema import op_args

META = torch.device("meta")
ALL = satkern.STAT_NAMES


def _meta(*shape):
    return torch.empty(*shape, device=META)


def _meta_call(**over):
    B, H, T, D = 2, 3, 40, 64
    q, k, v = _meta(B, H, T, D), _meta(B, H, T, D), _meta(B, H, T, D)
    kw = dict(lengths=torch.empty(B, dtype=torch.int64, device=META), bias=_meta(H, T, T), stats=ALL, span=5,
              span_mode="renorm", head_mask=torch.empty(H, dtype=torch.int64, device=META),
              label_weights=_meta(B, T, 7))
    kw.update(over)
    return validate(q, k, v, **kw)


def test_meta_tensors_raise_on_value_reads():  # the premise of this file
    x = torch.empty(3, dtype=torch.int64, device=META)
    with pytest.raises(Exception):
        int(x.min())
    with pytest.raises(Exception):
        bool((x == 0).any())


@pytest.mark.parametrize("lengths", ["meta", "cpu", "none"])
def test_validation_reads_no_device_values(lengths):
    over = {"meta": {}, "cpu": {"lengths": torch.tensor([40, 17])}, "none": {"lengths": None}}[lengths]
    call = _meta_call(**over)
    assert call.lengths.device == META and call.lengths.dtype == torch.int64
    assert call.head_mask.device == META and call.head_mask.dtype == torch.bool
    assert call.bias.shape == (2, 3, 40, 40)


def test_cpu_values_are_still_checked_on_the_host():
    x = torch.randn(2, 1, 6, 8)
    with pytest.raises(ValueError, match="lengths"):
        validate(x, x, x, lengths=torch.tensor([7, 3]))
    with pytest.raises(ValueError, match="head_mask"):
        validate(x, x, x, head_mask=torch.tensor([2]))
    # CPU lengths for tensors on another device: checked on the host before the copy
    q = _meta(2, 1, 6, 8)
    with pytest.raises(ValueError, match="lengths"):
        validate(q, q, q, lengths=torch.tensor([7, 3]))


def test_dispatch_reads_no_device_values():
    call = _meta_call()
    assert select(call).name == "reference"  # the only backend that takes meta tensors
    for name in ("cpu", "triton", "cuda"):
        with pytest.raises(satkern.BackendUnavailable):
            select(call, name)


@pytest.mark.parametrize("op", ["fused_attention", "fused_attention_triton"])
def test_op_runs_on_meta(op):
    call = _meta_call()
    outs = getattr(torch.ops.satkern, op)(*op_args(call))
    assert all(o.device == META for o in outs)
    assert outs[0].shape == (2, 3, 40, 64) and outs[1].shape == (2, 3, 40) and outs[6].shape == (2, 3, 40, 7)


def test_selection_is_cached_per_call_structure(monkeypatch):
    x = torch.randn(1, 2, 8, 16)
    calls = []
    ref = satkern.backends()["reference"]
    orig = type(ref).reasons

    def counting(self, call):
        calls.append(1)
        return orig(self, call)

    monkeypatch.setattr(type(ref), "reasons", counting)
    dispatch.clear_selection_cache()
    first = select(validate(x, x, x))
    n = len(calls)
    assert n >= 1
    for _ in range(5):
        assert select(validate(x + 1, x, x)) is first  # same structure, other values: no new reasons() call
    assert len(calls) == n
    select(validate(x, x, x, stats=("entropy",)))  # another structure: asked again
    assert len(calls) > n


def test_auto_says_its_priority_is_static_and_takes_a_tuning_table():
    x = torch.randn(1, 2, 8, 16)
    try:
        dispatch.set_tuning_table(None)
        assert "static priorities, not measured" in dispatch.auto_policy()
        assert select(validate(x, x, x)).name == "cpu"
        # a (made-up, for the test) measured table that prefers the reference on this CPU for T <= 8
        dispatch.set_tuning_table({"version": 1, "measured": "test", "entries": [
            {"device": "cpu", "dtype": "float32", "head_dim": 16, "max_T": 8, "order": ["reference"]}]})
        assert "measured tuning table" in dispatch.auto_policy()
        assert select(validate(x, x, x)).name == "reference"
        y = torch.randn(1, 2, 9, 16)
        assert select(validate(y, y, y)).name == "cpu"  # outside the entry: static priority
        with pytest.raises(ValueError, match="version"):
            dispatch.set_tuning_table({"entries": []})
    finally:
        dispatch._TUNING.update(loaded=False, table=None, source=None)
        dispatch.clear_selection_cache()


class _Attn(torch.nn.Module):
    num_heads = 3


def test_patch_run_reads_no_device_values_with_host_lengths():
    """Patch.run on meta q/k/v with CPU lengths (the usual case: lengths known on the host): pruned heads,
    a span, padding (the padded-row fill), metrics; nothing reads a device value."""
    from satkern.patching.core import Patch

    from satkern.patching.capture import HeadMetricsCapture

    m = _Attn()
    p = Patch(torch.nn.Sequential(m), [m], stats=ALL, prune={(0, 1)}, span=4)
    q = _meta(2, 3, 12, 16)
    out = p.run(m, q, q, q, lengths=torch.tensor([12, 7]), scale=None)
    assert out.shape == q.shape and out.device == META
    capture = next(o for o in p.observers if isinstance(o, HeadMetricsCapture))
    assert capture.blocks[0][0]["G"].device == META


@pytest.mark.parametrize("name", ["tiny-wav2vec2-base", "tiny-wavlm-base"])
def test_patch_reads_lengths_once_per_forward(name):
    """Tiny HF models with padding (the AttentionInterface path and WavLM's module path): the mask checks
    run once per forward, not once per layer."""
    from satkern.patching import core

    model = satkern.models.build(name)
    model.eval()
    wav = torch.randn(2, 4000)
    mask = torch.ones(2, 4000, dtype=torch.long)
    mask[1, 2500:] = 0
    n_checks = []
    orig = core.lengths_from_mask

    def counting(*a, **k):
        n_checks.append(1)
        return orig(*a, **k)

    core.lengths_from_mask = counting
    try:
        with satkern.patch(model, stats=ALL) as h:
            with torch.no_grad():
                model(wav, attention_mask=mask)
            layers = h.num_layers
    finally:
        core.lengths_from_mask = orig
    assert layers >= 2
    assert len(n_checks) == 1, f"mask checked {len(n_checks)} times for {layers} layers"

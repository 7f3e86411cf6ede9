"""Patched models train: gradients through satkern equal the eager model's, a patched model's loss falls,
head gates give Michel et al.'s gradient importance, and training with attention dropout is refused by name."""
import pytest
import torch

import satkern
from satkern.models import build, load_model
from satkern.ops.extension import extension_error

pytestmark = pytest.mark.skipif(extension_error() is not None,
                                reason=f"C++ extension not built: {extension_error()}")

# two-layer models with every dropout (and HF's LayerDrop / SpecAugment masking) off, so train mode is
# deterministic and the eager and patched runs can be compared
NO_DROPOUT = {
    "tiny-mockingjay-base": dict(attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0),
    "tiny-hubert-base": dict(attention_dropout=0.0, hidden_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                             layerdrop=0.0, mask_time_prob=0.0, num_hidden_layers=2),
}


def _model_and_inputs(name, seed=0):
    torch.manual_seed(seed)
    model = build(name, **NO_DROPOUT[name]).double().train()
    g = torch.Generator().manual_seed(seed + 1)
    n = (4000, 2500) if "mockingjay" in name else (5200, 3300)
    inputs, frames = load_model(name).prepare([torch.randn(k, generator=g) for k in n])
    inputs = {k: v.double() if v.dtype.is_floating_point else v for k, v in inputs.items()}
    return model, inputs, frames


def _loss(model, inputs, target):
    out = model(**inputs).last_hidden_state
    return ((out - target[..., : out.shape[-1]]) ** 2).mean()


@pytest.mark.parametrize("name", sorted(NO_DROPOUT))
def test_patched_grads_equal_eager(name):
    model, inputs, frames = _model_and_inputs(name)
    assert model.training
    with torch.no_grad():
        target = torch.randn_like(model(**inputs).last_hidden_state)
    params = [p for p in model.parameters() if p.requires_grad]
    eager = torch.autograd.grad(_loss(model, inputs, target), params, allow_unused=True)
    with satkern.patch(model, stats=("entropy",), backend="cpu") as h:
        patched = torch.autograd.grad(_loss(model, inputs, target), params, allow_unused=True)
    assert h.backends_used == {"cpu"}
    compared = 0
    for p, a, b in zip(params, eager, patched):
        if a is None:
            assert b is None or float(b.abs().max()) == 0.0
            continue
        torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-10)
        compared += 1
    assert compared > 10
    # the attention projections get gradient through satkern (not only the layers around it)
    names = [n for n, _ in model.named_parameters()]
    q_grads = [g for n, g in zip(names, patched) if "q_proj" in n or "query" in n]
    assert q_grads and all(float(g.abs().max()) > 0 for g in q_grads)


@pytest.mark.parametrize("name", sorted(NO_DROPOUT))
def test_patched_model_trains(name):
    model, inputs, frames = _model_and_inputs(name, seed=3)
    with torch.no_grad():
        target = torch.randn_like(model(**inputs).last_hidden_state)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    with satkern.patch(model, stats=(), span=2, backend="cpu"):
        for _ in range(8):
            opt.zero_grad()
            loss = _loss(model, inputs, target)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses


def test_head_importance_matches_finite_differences():
    model, inputs, frames = _model_and_inputs("tiny-mockingjay-base", seed=5)
    model.eval()
    with torch.no_grad():
        target = torch.randn_like(model(**inputs).last_hidden_state)
    with satkern.patch(model, stats=(), prune={(1, 2)}, head_gates=True, backend="cpu") as h:
        assert h.head_gates.shape == (2, 4) and bool((h.head_gates == 1).all())
        assert h.head_gates.dtype == torch.float64  # the model's dtype
        _loss(model, inputs, target).backward()
        raw = h.head_importance(normalized=False)
        grad = h.head_gates.grad.clone()
        eps = 1e-6
        for layer, head in ((0, 0), (0, 3), (1, 1)):
            with torch.no_grad():
                h.head_gates[layer, head] += eps
                up = float(_loss(model, inputs, target))
                h.head_gates[layer, head] -= 2 * eps
                down = float(_loss(model, inputs, target))
                h.head_gates[layer, head] += eps
            fd = (up - down) / (2 * eps)
            assert abs(fd - float(grad[layer, head])) <= 1e-6 * max(1.0, abs(fd)), (layer, head, fd, grad)
        assert float(raw[1, 2]) == 0.0  # a pruned head has no output: no importance
        assert bool((raw > 0).sum() >= 6)
        torch.testing.assert_close(raw, grad.abs().float())
        norm = h.head_importance()
        torch.testing.assert_close(norm.norm(dim=-1), torch.ones(2))
        torch.testing.assert_close(norm, raw / raw.norm(dim=-1, keepdim=True))
        # accumulated over backward calls: |sum of the gradients|, not the sum of their absolute values
        first = h.head_gates.grad.clone()
        (-3.0 * _loss(model, inputs, target)).backward()
        torch.testing.assert_close(h.head_importance(normalized=False), (first * -2.0).abs().float())
        h.zero_importance()
        with pytest.raises(RuntimeError, match="no gradient yet"):
            h.head_importance()


def test_head_gates_leave_outputs_unchanged_and_need_the_flag():
    model, inputs, _ = _model_and_inputs("tiny-mockingjay-base", seed=6)
    model.eval()
    with torch.no_grad():
        with satkern.patch(model, stats=(), backend="cpu") as h0:
            plain = model(**inputs).last_hidden_state
            with pytest.raises(RuntimeError, match="head_gates=True"):
                h0.head_importance()
        with satkern.patch(model, stats=(), head_gates=True, backend="cpu"):
            gated = model(**inputs).last_hidden_state
    torch.testing.assert_close(gated, plain, rtol=0, atol=0)
    with pytest.raises(TypeError, match="head_gates"):
        satkern.patch(model, head_gates="yes")


@pytest.mark.parametrize("name,field", [("tiny-mockingjay-base", "attention_probs_dropout_prob"),
                                        ("tiny-hubert-base", "attention_dropout")])
def test_training_with_attention_dropout_names_the_config_field(name, field):
    overrides = dict(NO_DROPOUT[name])
    overrides["attention_probs_dropout_prob" if "mockingjay" in name else "attention_dropout"] = 0.1
    torch.manual_seed(0)
    model = build(name, **overrides).double().train()
    _, inputs, _ = _model_and_inputs(name)
    with satkern.patch(model, stats=(), backend="cpu"):
        with pytest.raises(RuntimeError, match=f"training mode with attention dropout.*'{field}'"):
            model(**inputs)

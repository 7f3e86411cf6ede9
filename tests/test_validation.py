"""Bad input gets a clear error naming the argument and what was expected (every backend shares this path)."""
import pytest
import torch

import satkern
from satkern.ops.dispatch import BackendUnavailable


def qkv(B=2, H=3, T=5, D=4, dtype=torch.float32):
    return [torch.randn(B, H, T, D, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("case, arg, match", [
    (lambda q, k, v: ((q[0], k, v), {}), "q", r"'q' must be a 4-d tensor"),
    (lambda q, k, v: ((q, k[:, :, :4], v), {}), "k", r"'k' must be the same shape as q"),
    (lambda q, k, v: ((q, k, v[..., :3]), {}), "v", r"'v' must be head dim 4"),
    (lambda q, k, v: ((q, k.double(), v), {}), "k", r"'k' must be dtype torch.float32"),
    (lambda q, k, v: ((q.int(), k, v), {}), "q", r"'q' must be float16, bfloat16, float32 or float64"),
    (lambda q, k, v: ((q, k, v), {"lengths": torch.tensor([5, 6])}), "lengths", r"values in \[0, T=5\]"),
    (lambda q, k, v: ((q, k, v), {"lengths": torch.tensor([-1, 2])}), "lengths", r"values in \[0, T=5\]"),
    (lambda q, k, v: ((q, k, v), {"lengths": torch.tensor([5, 2, 3])}), "lengths", r"shape \[B\] = \[2\]"),
    (lambda q, k, v: ((q, k, v), {"lengths": torch.tensor([5.0, 2.0])}), "lengths", r"integer tensor"),
    (lambda q, k, v: ((q, k, v), {"span": -1}), "span", r"non-negative"),
    (lambda q, k, v: ((q, k, v), {"span": 1.5}), "span", r"non-negative int"),
    (lambda q, k, v: ((q, k, v), {"span_mode": "clip"}), "span_mode", r"one of \('zero', 'renorm'\)"),
    (lambda q, k, v: ((q, k, v), {"stats": ("entropy", "globalness")}), "stats", r"unknown name\(s\) \['globalness'\]"),
    (lambda q, k, v: ((q, k, v), {"head_mask": torch.ones(4)}), "head_mask", r"shape \[H\] = \[3\]"),
    (lambda q, k, v: ((q, k, v), {"head_mask": torch.ones(3, 3)}), "head_mask", r"\[B, H\] = \[2, 3\]"),
    (lambda q, k, v: ((q, k, v), {"head_mask": torch.tensor([0.0, 0.5, 1.0])}), "head_mask", r"0/1 or bool"),
    (lambda q, k, v: ((q, k, v), {"label_weights": torch.rand(2, 4, 3)}), "label_weights", r"\[B, T, L\] = \[2, 5, L\]"),
    (lambda q, k, v: ((q, k, v), {"label_weights": torch.ones(2, 5, 3, dtype=torch.long)}), "label_weights", r"floating-point"),
    (lambda q, k, v: ((q, k, v), {"bias": torch.rand(2, 3, 5, 4)}), "bias", r"broadcastable to \[B, H, T, T\]"),
    (lambda q, k, v: ((q, k, v), {"bias": torch.ones(5, 5, dtype=torch.long)}), "bias", r"floating-point"),
    (lambda q, k, v: ((q, k, v), {"scale": float("nan")}), "scale", r"finite"),
])
def test_bad_input_names_the_argument(case, arg, match, backend):
    args, kw = case(*qkv())
    with pytest.raises((ValueError, TypeError), match=f"'{arg}'") as exc:
        satkern.attention(*args, backend=backend, **kw)
    assert exc.match(match)


def test_not_a_tensor():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="'q' must be a torch.Tensor"):
        satkern.attention(q.tolist(), k, v)


def test_unknown_backend():
    with pytest.raises(ValueError, match="'backend' must be 'auto' or one of"):
        satkern.attention(*qkv(), backend="magic")


def test_unavailable_backend_says_why():
    # every backend name that exists but cannot run a CPU float64 call must say why
    q, k, v = qkv(dtype=torch.float64)
    for name, b in satkern.backends().items():
        from satkern.ops.contract import validate
        why = b.reasons(validate(q, k, v))
        if why:
            with pytest.raises(BackendUnavailable, match=name):
                satkern.attention(q, k, v, backend=name)


def test_head_metrics_needs_its_statistics():
    res = satkern.attention(*qkv(), stats=("entropy",), backend="reference")
    with pytest.raises(ValueError, match="V needs 'colmass'"):
        satkern.head_metrics(res)
    m = satkern.head_metrics(res, which=("G",))
    assert m.G.shape == (2, 3) and m.V is None

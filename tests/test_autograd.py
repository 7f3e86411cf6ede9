"""Gradients through satkern.attention: gradcheck on the cpu backend, every backend against the float64
reference (the "2x PyTorch's error" rule of satkern.ops.testing), opcheck's autograd registration,
torch.compile of forward + backward, and the clear errors (maxweight / label_mass, double backward)."""

import pytest
import torch

import satkern
from satkern.ops import schema
from satkern.ops.contract import validate
from satkern.ops.extension import extension_error
from satkern.ops.testing import compiler_missing, grad_failures, grad_inputs, grads_of

pytestmark = pytest.mark.skipif(extension_error() is not None,
                                reason=f"C++ extension not built: {extension_error()}")

DIFF_STATS = ("entropy", "distance", "colmass")




# (name, kwargs of satkern.attention except q/k/v/bias, bias shape or None)
GRADCHECK_CASES = [
    ("plain_all_stats", dict(stats=DIFF_STATS), None),
    ("lengths", dict(lengths=torch.tensor([6, 3]), stats=DIFF_STATS), None),
    ("bias_full", dict(stats=("entropy",)), (2, 2, 6, 6)),
    ("bias_broadcast_TT", dict(stats=("distance",), lengths=torch.tensor([6, 4])), (6, 6)),
    ("bias_rows_broadcast", dict(stats=("colmass",)), (1, 2, 1, 6)),
    ("bias_keys_broadcast", dict(stats=DIFF_STATS), (2, 1, 6, 1)),
    ("span_zero", dict(span=1, stats=DIFF_STATS), (2, 1, 6, 6)),
    ("span_renorm", dict(span=1, span_mode="renorm", stats=DIFF_STATS, lengths=torch.tensor([5, 6])), (6, 6)),
    ("head_mask", dict(head_mask=torch.tensor([1, 0]), stats=DIFF_STATS), (2, 2, 6, 6)),
    ("scale", dict(scale=0.7, stats=("entropy", "distance")), None),
]


@pytest.mark.parametrize("name,kw,bias_shape", GRADCHECK_CASES, ids=[c[0] for c in GRADCHECK_CASES])
def test_gradcheck_cpu_float64(name, kw, bias_shape):
    q, k, v, bias = grad_inputs(hash(name) % 1000, 2, 2, 6, 4, torch.float64, bias_shape)
    stats = kw.get("stats", ())

    def f(q, k, v, *maybe_bias):
        res = satkern.attention(q, k, v, bias=maybe_bias[0] if maybe_bias else None, backend="cpu", **kw)
        # masked heads' statistics are NaN by contract: compare the finite part
        return (res.out, res.lse.nan_to_num()) + tuple(getattr(res, s).nan_to_num() for s in stats)

    args = (q, k, v) + ((bias,) if bias is not None else ())
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


def _loss_weights(res, seed, names):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(getattr(res, n).shape, generator=g, dtype=torch.float64) for n in names}


# Every backend's float32 gradients against the float64 reference; odd T, T = 1, length 0, broadcast biases.
COMPARE_CASES = [
    ("odd_T_lengths_all_stats", dict(B=2, H=3, T=37, D=16, lengths=[37, 20], stats=DIFF_STATS), None),
    ("T1", dict(B=1, H=2, T=1, D=8, stats=DIFF_STATS), (1, 2, 1, 1)),
    ("length0", dict(B=2, H=2, T=9, D=8, lengths=[0, 9], stats=DIFF_STATS), (2, 2, 9, 9)),
    ("bias_TT_span_zero", dict(B=2, H=2, T=70, D=16, lengths=[70, 41], span=5, stats=DIFF_STATS), (70, 70)),
    ("bias_heads_renorm", dict(B=2, H=2, T=70, D=16, span=4, span_mode="renorm", stats=DIFF_STATS), (1, 2, 70, 70)),
    ("bias_rows_head_mask", dict(B=2, H=3, T=33, D=8, head_mask=[[1, 0, 1], [0, 1, 1]], stats=("entropy",)),
     (2, 3, 1, 33)),
    ("many_blocks_out_only", dict(B=1, H=1, T=150, D=32, lengths=[140]), None),
]


def _compare_backend(backend, name, kw, bias_shape, dtype=torch.float32):
    kw = dict(kw)
    B, H, T, D = (kw.pop(x) for x in "BHTD")
    for key in ("lengths", "head_mask"):
        if key in kw:
            kw[key] = torch.tensor(kw[key])
    stats = kw.get("stats", ())
    seed = sum(map(ord, name))
    q, k, v, bias = grad_inputs(seed, B, H, T, D, dtype, bias_shape)
    res = satkern.attention(q, k, v, bias=bias, backend=backend, **kw)
    weights = _loss_weights(res, seed + 1, ("out", "lse") + tuple(stats))
    got = grads_of(res, weights, q, k, v, bias)
    # the oracle: the reference backend on the same values in float64
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    b64 = None if bias is None else bias.detach().double().requires_grad_()
    ref = grads_of(satkern.attention(q64, k64, v64, bias=b64, backend="reference", **kw), weights, q64, k64, v64, b64)
    # plain PyTorch in float32
    qb, kb, vb = (x.detach().clone().requires_grad_() for x in (q, k, v))
    bb = None if bias is None else bias.detach().clone().requires_grad_()
    from satkern.ops.testing import torch_baseline
    call = validate(qb, kb, vb, bias=bb, **kw)
    base = grads_of(torch_baseline(call, zero_masked_heads=True), weights, qb, kb, vb, bb)
    return grad_failures(got, ref, base, dtype)


@pytest.mark.parametrize("name,kw,bias_shape", COMPARE_CASES, ids=[c[0] for c in COMPARE_CASES])
def test_cpu_grads_match_reference_float32(name, kw, bias_shape):
    bad = _compare_backend("cpu", name, kw, bias_shape)
    assert not bad, bad


def test_cpu_grads_bfloat16_match_reference():
    bad = _compare_backend("cpu", "bf16", dict(B=2, H=2, T=45, D=16, lengths=[45, 30], stats=DIFF_STATS), (45, 45),
                           dtype=torch.bfloat16)
    assert not bad, bad


def test_grad_dtypes_and_shapes_followgrad_inputs():
    q, k, v, bias = grad_inputs(3, 2, 2, 10, 8, torch.bfloat16, (10, 10))
    res = satkern.attention(q, k, v, bias=bias, stats=("entropy",), backend="cpu")
    (res.out.float().sum() + res.entropy.sum()).backward()
    for x in (q, k, v, bias):
        assert x.grad.dtype == x.dtype and x.grad.shape == x.shape


def test_masked_heads_and_padding_get_no_gradient():
    q, k, v, _ = grad_inputs(4, 2, 3, 12, 8, torch.float32)
    res = satkern.attention(q, k, v, lengths=torch.tensor([12, 7]), head_mask=torch.tensor([1, 0, 1]),
                            stats=("entropy", "distance"), backend="cpu")
    (res.out.sum() + res.entropy.nan_to_num().sum() + res.distance.nan_to_num().sum()).backward()
    for x in (q, k, v):
        assert float(x.grad[:, 1].abs().max()) == 0.0  # masked head
        assert float(x.grad[1, :, 7:].abs().max()) == 0.0  # padded frames of utterance 1
        assert float(x.grad[:, 0].abs().max()) > 0.0


def test_cpu_backward_is_deterministic():
    def grads():
        q, k, v, bias = grad_inputs(5, 1, 2, 200, 16, torch.float32, (2, 200, 200))
        res = satkern.attention(q, k, v, bias=bias, stats=DIFF_STATS, lengths=torch.tensor([190]), backend="cpu")
        (res.out.square().sum() + res.entropy.sum() + res.colmass.square().sum()).backward()
        return [x.grad for x in (q, k, v, bias)]

    for a, b in zip(grads(), grads()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["maxweight", "label_mass"])
def test_gradient_into_non_differentiable_stat_raises(name):
    q, k, v, _ = grad_inputs(6, 1, 2, 8, 4, torch.float32)
    res = satkern.attention(q, k, v, stats=("maxweight",), label_weights=torch.rand(1, 8, 3), backend="cpu")
    with pytest.raises(RuntimeError, match=f"'{name}' is not differentiable"):
        getattr(res, name).sum().backward()
    # detached, it is data: the gradient of out alone flows
    res = satkern.attention(q, k, v, stats=("maxweight",), label_weights=torch.rand(1, 8, 3), backend="cpu")
    (res.out.sum() * getattr(res, name).detach().sum()).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_double_backward_raises():
    q, k, v, _ = grad_inputs(7, 1, 1, 5, 4, torch.float64)
    res = satkern.attention(q, k, v, backend="cpu")
    (gq,) = torch.autograd.grad(res.out.square().sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gq.sum().backward()


def _op_args(seed, *, B=2, H=2, T=11, D=8, bias_shape=None, **kw):
    q, k, v, bias = grad_inputs(seed, B, H, T, D, torch.float32, bias_shape)
    return schema.op_args(validate(q, k, v, bias=bias, **kw))


OPCHECK_SETS = {
    "lengths_stats": lambda: _op_args(0, lengths=torch.tensor([11, 5]), stats=DIFF_STATS),
    "bias_grad_span_zero": lambda: _op_args(1, bias_shape=(11, 11), span=2, stats=("entropy", "distance")),
    "renorm_bias_heads": lambda: _op_args(2, bias_shape=(1, 2, 11, 11), span=3, span_mode="renorm", stats=DIFF_STATS),
}


@pytest.mark.parametrize("name", sorted(OPCHECK_SETS))
def test_opcheck_with_grad(name):
    torch.library.opcheck(torch.ops.satkern.fused_attention.default, OPCHECK_SETS[name](),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


@pytest.mark.skipif(compiler_missing() is not None, reason=str(compiler_missing()))
def test_torch_compile_fullgraph_forward_backward_matches_eager():
    args = _op_args(3, lengths=torch.tensor([11, 8]), bias_shape=(11, 11), stats=("entropy", "distance"))
    q, k, v, lengths, bias = args[:5]
    rest = args[5:]

    def step(q, k, v, bias):
        outs = torch.ops.satkern.fused_attention(q, k, v, lengths, bias, *rest)
        loss = outs[0].square().sum() + outs[2].sum() - 0.5 * outs[3].sum()
        return torch.autograd.grad(loss, (q, k, v, bias))

    torch._dynamo.reset()
    eager = step(q, k, v, bias)

    def loss_fn(q, k, v, bias):
        outs = torch.ops.satkern.fused_attention(q, k, v, lengths, bias, *rest)
        return outs[0].square().sum() + outs[2].sum() - 0.5 * outs[3].sum()

    compiled = torch.compile(loss_fn, fullgraph=True)
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v, bias)]
    compiled(*leaves).backward()
    for a, b in zip(leaves, eager):
        torch.testing.assert_close(a.grad, b, rtol=1e-5, atol=1e-6)

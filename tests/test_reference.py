"""The float64 reference backend against hand-derivable cases and direct definitions."""
import math

import pytest
import torch

import satkern
from satkern.metrics import head_metrics_from_map
from satkern.ops.contract import validate
from satkern.ops.maps import call_distribution as attention_map

ALL = satkern.STAT_NAMES


def rand(*shape, dtype=torch.float64, seed=None):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(*shape, dtype=dtype, generator=g)


def run(q, k, v, **kw):
    kw.setdefault("stats", ALL)
    return satkern.attention(q, k, v, backend="reference", **kw)


@pytest.mark.parametrize("T", [1, 2, 7, 16])
def test_uniform_attention(T):
    B, H, D = 2, 3, 8
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    res = run(q, k, v, scale=0.0)  # every score 0 -> uniform rows
    m = satkern.head_metrics(res)
    torch.testing.assert_close(m.G, torch.full((B, H), math.log(T), dtype=torch.float64))
    torch.testing.assert_close(m.V, torch.full((B, H), -math.log(T), dtype=torch.float64))
    torch.testing.assert_close(m.D, torch.full((B, H), -(T * T - 1) / (3 * T * T), dtype=torch.float64))
    torch.testing.assert_close(m.W, torch.full((B, H), 1.0 / T, dtype=torch.float64))
    torch.testing.assert_close(res.out, v.mean(-2, keepdim=True).expand_as(v))
    torch.testing.assert_close(res.lse, torch.full((B, H, T), math.log(T), dtype=torch.float64))


def test_identity_like_attention():
    B, H, T, D = 1, 2, 9, 4
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    bias = torch.eye(T, dtype=torch.float64) * 200.0  # diagonal dominates every row
    res = run(q, k, v, bias=bias, scale=0.1)
    m = satkern.head_metrics(res)
    assert m.G.abs().max() < 1e-6
    assert m.D.abs().max() < 1e-6
    torch.testing.assert_close(m.W, torch.ones(B, H, dtype=torch.float64))
    torch.testing.assert_close(m.V, torch.full((B, H), -math.log(T), dtype=torch.float64))
    torch.testing.assert_close(res.out, v, atol=1e-8, rtol=0)


def test_every_query_on_one_key():
    B, H, T, D, j0 = 2, 2, 6, 4, 2
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    bias = torch.zeros(T, T, dtype=torch.float64)
    bias[:, j0] = 300.0
    res = run(q, k, v, bias=bias, scale=0.1)
    m = satkern.head_metrics(res)
    assert m.V.abs().max() < 1e-9  # column distribution is one-hot: entropy 0
    expected_D = -sum(abs(i - j0) for i in range(T)) / T ** 2
    torch.testing.assert_close(m.D, torch.full((B, H), expected_D, dtype=torch.float64))
    torch.testing.assert_close(res.colmass[..., j0], torch.full((B, H), float(T), dtype=torch.float64))


def test_statistics_match_definitions_on_the_map():
    B, H, T, D, L = 2, 3, 11, 8, 5
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    lengths = torch.tensor([11, 6])
    W = torch.rand(B, T, L, dtype=torch.float64)
    res = run(q, k, v, lengths=lengths, label_weights=W)
    for b in range(B):
        n = int(lengths[b])
        s = (q[b, :, :n] @ k[b, :, :n].transpose(-1, -2)) * D ** -0.5
        A = torch.softmax(s, -1)
        i = torch.arange(n, dtype=torch.float64)
        torch.testing.assert_close(res.out[b, :, :n], A @ v[b, :, :n])
        torch.testing.assert_close(res.lse[b, :, :n], torch.logsumexp(s, -1))
        torch.testing.assert_close(res.entropy[b, :, :n], -(A * A.log()).sum(-1))
        torch.testing.assert_close(res.distance[b, :, :n], (A * (i[:, None] - i[None]).abs()).sum(-1))
        torch.testing.assert_close(res.colmass[b, :, :n], A.sum(-2))
        torch.testing.assert_close(res.maxweight[b, :, :n], A.amax(-1))
        torch.testing.assert_close(res.label_mass[b, :, :n], A @ W[b, :n])
        # padded rows: everything exactly 0
        for t in (res.out, res.lse, res.entropy, res.distance, res.colmass, res.maxweight, res.label_mass):
            assert (t[b, :, n:] == 0).all()
    torch.testing.assert_close(res.colmass.sum(-1), lengths.to(torch.float64)[:, None].expand(B, H))


def test_lengths_equal_truncation():
    B, H, T, D = 3, 2, 10, 4
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    lengths = torch.tensor([10, 3, 0])
    # garbage in the padding must not matter
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for t in (q2, k2, v2):
        t[1, :, 3:] = float("nan")
    res = run(q2, k2, v2, lengths=lengths)
    one = run(q[1:2, :, :3], k[1:2, :, :3], v[1:2, :, :3])
    for name in ("out", "lse") + ALL:
        torch.testing.assert_close(getattr(res, name)[1:2, :, :3], getattr(one, name))
    assert (res.out[2] == 0).all() and (res.entropy[2] == 0).all()
    with pytest.warns(UserWarning, match="length 0"):
        m = satkern.head_metrics(res)
    assert torch.isnan(m.G[2]).all() and torch.isfinite(m.G[:2]).all()


@pytest.mark.parametrize("r", [0, 1, 3, 20])
def test_span_zero_mode(r):
    B, H, T, D = 1, 2, 9, 4
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    full = run(q, k, v)
    res = run(q, k, v, span=r, span_mode="zero")
    A = torch.softmax((q @ k.transpose(-1, -2)) * D ** -0.5, -1)
    i = torch.arange(T)
    band = (i[:, None] - i[None]).abs() <= r
    torch.testing.assert_close(res.out, (A * band) @ v)
    for name in ("lse",) + ALL:  # statistics describe A before zeroing
        torch.testing.assert_close(getattr(res, name), getattr(full, name))


@pytest.mark.parametrize("r", [0, 1, 3, 20])
def test_span_renorm_mode(r):
    B, H, T, D = 2, 2, 9, 4
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    lengths = torch.tensor([9, 5])
    res = run(q, k, v, span=r, span_mode="renorm", lengths=lengths)
    i = torch.arange(T)
    band = (i[:, None] - i[None]).abs() <= r
    for b in range(B):
        n = int(lengths[b])
        s = ((q[b] @ k[b].transpose(-1, -2)) * D ** -0.5)[:, :n, :n]
        s = s.masked_fill(~band[:n, :n], float("-inf"))
        A = torch.softmax(s, -1)
        torch.testing.assert_close(res.out[b, :, :n], A @ v[b, :, :n])
        torch.testing.assert_close(res.entropy[b, :, :n], -torch.special.xlogy(A, A).sum(-1))
        torch.testing.assert_close(res.colmass[b, :, :n], A.sum(-2))
    if r >= T:
        torch.testing.assert_close(res.out, run(q, k, v, lengths=lengths).out)


@pytest.mark.parametrize("shape", ["H", "BH", "bool"])
def test_head_mask(shape):
    B, H, T, D = 2, 4, 6, 4
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    if shape == "H":
        hm = torch.tensor([1, 0, 1, 0])
        keep = hm.bool()[None].expand(B, H)
    else:
        keep = torch.tensor([[True, False, True, True], [False, True, True, False]])
        hm = keep if shape == "bool" else keep.int()
    full = run(q, k, v, label_weights=torch.rand(B, T, 3, dtype=torch.float64))
    res = run(q, k, v, head_mask=hm, label_weights=torch.rand(B, T, 3, dtype=torch.float64))
    assert (res.out[~keep] == 0).all()
    for name in ("lse",) + ALL:
        assert torch.isnan(getattr(res, name)[~keep]).all()
        torch.testing.assert_close(getattr(res, name)[keep], getattr(full, name)[keep])
    assert torch.isnan(res.label_mass[~keep]).all()
    m = satkern.head_metrics(res)
    assert torch.isnan(m.G[~keep]).all() and torch.isfinite(m.G[keep]).all()


def test_one_hot_label_mass_sums_to_one():
    B, H, T, D, L = 2, 2, 8, 4, 3
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    labels = torch.randint(0, L, (B, T))
    W = torch.nn.functional.one_hot(labels, L).to(torch.float64)
    res = run(q, k, v, label_weights=W, lengths=torch.tensor([8, 5]))
    torch.testing.assert_close(res.label_mass[0].sum(-1), torch.ones(H, T, dtype=torch.float64))
    torch.testing.assert_close(res.label_mass[1, :, :5].sum(-1), torch.ones(H, 5, dtype=torch.float64))


def test_bias_masking_every_key_gives_empty_rows():
    B, H, T, D = 1, 1, 4, 4
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    bias = torch.zeros(T, T, dtype=torch.float64)
    bias[2, :] = float("-inf")
    res = run(q, k, v, bias=bias)
    assert res.lse[0, 0, 2] == float("-inf")
    assert (res.out[0, 0, 2] == 0).all() and res.entropy[0, 0, 2] == 0
    assert torch.isfinite(res.out[0, 0, [0, 1, 3]]).all()


def test_stat_dtypes_and_none_when_not_asked():
    q = rand(1, 1, 5, 4, dtype=torch.float32)
    res = satkern.attention(q, q, q, stats=("entropy",), backend="reference")
    assert res.entropy.dtype == torch.float32 and res.lse.dtype == torch.float32
    assert res.distance is None and res.colmass is None and res.maxweight is None and res.label_mass is None
    assert res.out.dtype == torch.float32
    res16 = satkern.attention(q.bfloat16(), q.bfloat16(), q.bfloat16(), stats=ALL, backend="reference")
    assert res16.out.dtype == torch.bfloat16 and res16.entropy.dtype == torch.float32
    res64 = satkern.attention(q.double(), q.double(), q.double(), stats=ALL, backend="reference")
    assert res64.entropy.dtype == torch.float64


def test_metrics_from_stats_equal_metrics_from_map():
    B, H, T, D = 3, 2, 12, 8
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    lengths = torch.tensor([12, 7, 1])
    bias = rand(H, T, T)
    res = run(q, k, v, lengths=lengths, bias=bias)
    A, _, _ = attention_map(validate(q, k, v, lengths=lengths, bias=bias))
    a, b = satkern.head_metrics(res), head_metrics_from_map(A, lengths)
    for f in "GVDW":
        torch.testing.assert_close(getattr(a, f), getattr(b, f))


def test_nan_input_affects_only_rows_it_touches():
    B, H, T, D = 1, 2, 6, 4
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    q[0, 0, 3, 1] = float("nan")
    res = run(q, k, v)
    assert torch.isnan(res.out[0, 0, 3]).all()
    others = torch.ones(H, T, dtype=torch.bool)
    others[0, 3] = False
    assert torch.isfinite(res.out[0][others]).all() and torch.isfinite(res.entropy[0][others]).all()


def test_zero_length_sequence():
    q = rand(2, 3, 0, 8)
    res = run(q, q, q, label_weights=torch.rand(2, 0, 4, dtype=torch.float64))
    assert res.out.shape == (2, 3, 0, 8) and res.entropy.shape == (2, 3, 0)
    assert res.label_mass.shape == (2, 3, 0, 4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_score_makes_the_whole_row_nan(bad):
    B, H, T, D = 1, 1, 7, 4
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    bias = torch.zeros(T, T, dtype=torch.float64)
    bias[2, 5] = bad
    res = run(q, k, v, bias=bias)
    for t in (res.out, res.lse, res.entropy, res.maxweight, res.distance):
        assert torch.isnan(t[0, 0, 2]).all()
        assert torch.isfinite(t[0, 0, [0, 1, 3, 4, 5, 6]]).all()
    assert torch.isnan(res.colmass).all()  # every column sums over the broken row
    # the CPU kernel agrees
    if "cpu" in satkern.availability() and satkern.availability()["cpu"] == "available":
        cpu = satkern.attention(q.float(), k.float(), v.float(), bias=bias.float(), stats=ALL, backend="cpu")
        for name in ("out", "lse") + ALL:
            assert torch.equal(torch.isnan(getattr(cpu, name)), torch.isnan(getattr(res, name))), name

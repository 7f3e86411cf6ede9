"""The CPU backward's tiled schedule (csrc/cpu/attention_cpu_backward.cpp: key tiles outer, query
blocks inner, used whenever no colmass gradient flows; SATKERN_CPU_BWD_SCHEDULE forces it, with its
colmass pre-pass, or the whole-row schedule): small tiles (SATKERN_CPU_BWD_TILE) make T = 23..70
cross many tile and block edges, and every case is checked against the float64 reference
under the project's rule (satkern.ops.testing.grad_failures): padding, empty rows, both span modes,
head masks, full and broadcast bias gradients, heads split into key-tile chunks over threads; the
result is bitwise repeatable for a fixed thread count; the portable and AVX2 builds of the row pass
both hold; the default tiles at T = 600 (several key tiles) hold."""

import pytest
import torch

import satkern
from satkern.ops.contract import validate
from satkern.ops.extension import extension_error
from satkern.ops.testing import grad_failures, grad_inputs, grads_of, torch_baseline


pytestmark = pytest.mark.skipif(extension_error() is not None,
                                reason=f"C++ extension not built: {extension_error()}")

TILED_STATS = ("entropy", "distance")  # no colmass: the tiled schedule


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)




def _weights(res, seed, names):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(getattr(res, n).shape, generator=g, dtype=torch.float64) for n in names}


def _cpu_grads(q, k, v, bias, kw, seed):
    res = satkern.attention(q, k, v, bias=bias, backend="cpu", **kw)
    weights = _weights(res, seed, ("out", "lse") + tuple(kw.get("stats", ())))
    return grads_of(res, weights, q, k, v, bias), weights


def _failures(q, k, v, bias, kw, seed):
    got, weights = _cpu_grads(q, k, v, bias, kw, seed)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    b64 = None if bias is None else bias.detach().double().requires_grad_()
    ref = grads_of(satkern.attention(q64, k64, v64, bias=b64, backend="reference", **kw), weights, q64, k64, v64, b64)
    qb, kb, vb = (x.detach().clone().requires_grad_() for x in (q, k, v))
    bb = None if bias is None else bias.detach().clone().requires_grad_()
    base = grads_of(torch_baseline(validate(qb, kb, vb, bias=bb, **kw), zero_masked_heads=True), weights, qb, kb, vb, bb)
    return grad_failures(got, ref, base, q.dtype)


# (name, B, H, T, D, kwargs of satkern.attention, bias shape or None)
CASES = [
    ("lengths_stats", 2, 3, 37, 16, dict(lengths=[37, 20], stats=TILED_STATS), None),
    ("out_only", 1, 2, 45, 8, dict(lengths=[41]), None),
    ("length0_T1", 2, 1, 1, 8, dict(lengths=[0, 1], stats=TILED_STATS), None),
    ("span_zero", 2, 2, 70, 16, dict(lengths=[70, 41], span=5, stats=TILED_STATS), (70, 70)),
    ("span_zero_wide", 1, 2, 50, 8, dict(span=17, stats=TILED_STATS), None),
    ("span_renorm", 2, 2, 70, 16, dict(lengths=[66, 70], span=4, span_mode="renorm", stats=TILED_STATS), (1, 2, 70, 70)),
    ("span_renorm_wide", 1, 2, 61, 8, dict(span=20, span_mode="renorm", stats=("entropy",)), None),
    ("bias_full_head_mask", 2, 3, 33, 8, dict(head_mask=[[1, 0, 1], [0, 1, 1]], stats=TILED_STATS), (2, 3, 33, 33)),
    ("bias_rows_summed", 2, 2, 29, 8, dict(lengths=[29, 17], stats=("distance",)), (1, 2, 1, 29)),
    ("bias_keys_summed", 2, 2, 29, 8, dict(lengths=[23, 29], stats=TILED_STATS), (2, 1, 29, 1)),
    ("bias_scalar", 1, 2, 23, 8, dict(stats=("entropy",)), (1, 1, 1, 1)),
]


# schedule: the default (tiled, no colmass gradient); "tiled" with a colmass gradient too (its r_i
# pre-pass); "rows" (the whole-row schedule a colmass gradient takes by default) on the same cases
SCHEDULES = [("8,16", None), ("5,7", None), ("64,256", None), ("5,7", "tiled"), ("8,16", "rows")]


@pytest.mark.parametrize("tile,schedule", SCHEDULES, ids=[f"{t}-{s or 'default'}" for t, s in SCHEDULES])
@pytest.mark.parametrize("name,B,H,T,D,kw,bias_shape", CASES, ids=[c[0] for c in CASES])
def test_tiled_grads_match_reference(monkeypatch, tile, schedule, name, B, H, T, D, kw, bias_shape):
    monkeypatch.setenv("SATKERN_CPU_BWD_TILE", tile)
    kw = {key: (torch.tensor(val) if key in ("lengths", "head_mask") else val) for key, val in kw.items()}
    if schedule is not None:
        monkeypatch.setenv("SATKERN_CPU_BWD_SCHEDULE", schedule)
        kw["stats"] = tuple(kw.get("stats", ())) + ("colmass",)
    seed = sum(map(ord, name))
    q, k, v, bias = grad_inputs(seed, B, H, T, D, bias_shape=bias_shape)
    bad = _failures(q, k, v, bias, kw, seed + 1)
    assert not bad, bad


def test_empty_rows_get_no_gradient(monkeypatch):
    """A bias of -inf over a whole row (lse = -inf) or over some keys: no NaN, no gradient through them."""
    monkeypatch.setenv("SATKERN_CPU_BWD_TILE", "4,8")
    q, k, v, _ = grad_inputs(7, 1, 2, 30, 8)
    bias = torch.zeros(1, 2, 30, 30)
    bias[0, 0, 5] = float("-inf")          # row 5 of head 0: no distribution
    bias[0, 1, :, 10:20] = float("-inf")   # keys 10..19 of head 1: weight 0
    bias.requires_grad_()
    kw = dict(stats=TILED_STATS)
    bad = _failures(q, k, v, bias, kw, 8)
    assert not bad, bad
    got, _ = _cpu_grads(q, k, v, bias, kw, 8)
    assert float(got["q"][0, 0, 5].abs().max()) == 0.0
    assert float(got["k"][0, 1, 10:20].abs().max()) == 0.0 and float(got["v"][0, 1, 10:20].abs().max()) == 0.0
    assert not any(torch.isnan(g).any() for g in got.values())


@pytest.mark.parametrize("nthreads", [1, 2, 3, 5])
def test_key_tile_chunks_over_threads(monkeypatch, threads, nthreads):
    """One head over several threads: key tiles split into chunks, each chunk's dQ summed in chunk order;
    correct and bitwise repeatable for a fixed thread count."""
    monkeypatch.setenv("SATKERN_CPU_BWD_TILE", "8,8")
    monkeypatch.setenv("SATKERN_CPU_BWD_SCHEDULE", "tiled")  # colmass too: every chunk's r_i pre-pass
    torch.set_num_threads(nthreads)
    q, k, v, bias = grad_inputs(nthreads, 1, 1, 53, 16, bias_shape=(1, 1, 53, 53))
    kw = dict(lengths=torch.tensor([50]), stats=TILED_STATS + ("colmass",), span=9)
    bad = _failures(q, k, v, bias, kw, 3)
    assert not bad, bad
    a, _ = _cpu_grads(q, k, v, bias, kw, 3)
    b, _ = _cpu_grads(q, k, v, bias, kw, 3)
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name}: not repeatable with {nthreads} threads"


def test_default_tiles_several_key_tiles(threads):
    """T = 600 with the default tiles (BK = 128, BQ = 256 or 128): several key tiles and query blocks, ragged last ones; float32 and float64."""
    torch.set_num_threads(2)
    for dtype in (torch.float32, torch.float64):
        q, k, v, _ = grad_inputs(11, 1, 2, 600, 16, dtype=dtype)
        kw = dict(lengths=torch.tensor([590]), stats=TILED_STATS)
        if dtype == torch.float32:
            bad = _failures(q, k, v, None, kw, 12)
            assert not bad, bad
            continue
        got, weights = _cpu_grads(q, k, v, None, kw, 12)
        q64, k64, v64 = (x.detach().clone().requires_grad_() for x in (q, k, v))
        ref = grads_of(satkern.attention(q64, k64, v64, backend="reference", **kw), weights, q64, k64, v64)
        for name in ("q", "k", "v"):
            err = float((got[name] - ref[name]).abs().max())
            assert err < 1e-10, (name, err)


@pytest.mark.parametrize("env", [{"SATKERN_CPU_NO_AVX2": "1"}, {}], ids=["portable", "avx2"])
def test_each_row_build_matches_the_reference(env, child_python_ok):
    """The portable and the AVX2 builds of the backward's row pass (grad_row_*.cpp), tiled and whole-row
    (colmass) schedules, against the float64 reference."""
    code = (
        "import torch, satkern\n"
        "from satkern.ops.testing import grads_of\n"
        "torch.manual_seed(0)\n"
        "q, k, v = (torch.randn(2, 2, 77, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))\n"
        "for stats in (('entropy', 'distance'), ('entropy', 'distance', 'colmass')):\n"
        "    kw = dict(lengths=torch.tensor([77, 40]), stats=stats)\n"
        "    w = {n: torch.randn(2, 2, 77, dtype=torch.float64) for n in ('lse',) + stats}\n"
        "    w['out'] = torch.randn(2, 2, 77, 16, dtype=torch.float64)\n"
        "    qf, kf, vf = (x.detach().float().requires_grad_() for x in (q, k, v))\n"
        "    a = grads_of(satkern.attention(qf, kf, vf, backend='cpu', **kw), w, qf, kf, vf)\n"
        "    r = grads_of(satkern.attention(q, k, v, backend='reference', **kw), w, q, k, v)\n"
        "    for n in ('q', 'k', 'v'):\n"
        "        err = float((a[n].double() - r[n]).abs().max())\n"
        "        assert err < 1e-4 * max(1.0, float(r[n].abs().max())), (stats, n, err)\n"
        "print('ok')\n")
    child_python_ok(code, env, timeout=300)

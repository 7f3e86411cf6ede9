"""The C++ CPU kernel (backend "cpu") against the float64 reference on fresh random inputs.

Tolerance rule (flash-attention's): the kernel's error against the float64 reference is at
most 2x the error of plain PyTorch eager attention computed in the same dtype, plus a small
absolute floor. Padded rows and masked heads are checked exactly (0 / NaN as the contract says).
"""

import os

import pytest
import torch

import satkern
from satkern.ops.contract import validate
from satkern.ops.extension import extension_error
from satkern.ops.testing import torch_baseline

pytestmark = pytest.mark.skipif(extension_error() is not None,
                                reason=f"C++ extension not built: {extension_error()}")



@pytest.fixture(scope="module", autouse=True, params=["default-rows", "generic-rows"])
def row_path(request):
    """Run everything twice: with the AVX-512 float32 row pass (where the CPU has it) and without."""
    old = os.environ.get("SATKERN_CPU_NO_AVX512")
    if request.param == "generic-rows":
        os.environ["SATKERN_CPU_NO_AVX512"] = "1"
    else:
        os.environ.pop("SATKERN_CPU_NO_AVX512", None)
    yield request.param
    if old is None:
        os.environ.pop("SATKERN_CPU_NO_AVX512", None)
    else:
        os.environ["SATKERN_CPU_NO_AVX512"] = old


ALL = satkern.STAT_NAMES
FIELDS = ("out", "lse") + ALL + ("label_mass",)
# absolute floor per dtype, relative to the magnitude of the quantity (1 + max |ref|)
FLOOR = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 2e-3, torch.float16: 2e-4}


def rand(*shape, dtype=torch.float32, gen=None):
    return torch.randn(*shape, generator=gen).to(dtype)


def max_err(x, ref, mask=None):
    d = (x.double() - ref.double()).abs()
    same = (torch.isnan(x) & torch.isnan(ref)) | (x.double() == ref.double())  # NaN/inf conventions
    d = torch.where(same, torch.zeros_like(d), d)
    d = torch.nan_to_num(d, nan=float("inf"))
    if mask is not None:
        d = d[mask.expand_as(d)]
    return float(d.max()) if d.numel() else 0.0


def check(q, k, v, *, eager_dtype=None, **kw):
    """Run cpu and reference, assert the tolerance rule and the padded/masked conventions."""
    kw.setdefault("stats", ALL)
    res = satkern.attention(q, k, v, backend="cpu", **kw)
    assert res.backend == "cpu"
    kw64 = dict(kw)
    for name in ("bias", "label_weights"):
        if kw64.get(name) is not None:
            kw64[name] = kw64[name].double()
    ref = satkern.attention(q.double(), k.double(), v.double(), backend="reference", **kw64)
    call = validate(q, k, v, **{n: x for n, x in kw.items()})
    B, H, T, D = q.shape
    sd = torch.float64 if q.dtype == torch.float64 else torch.float32
    assert res.out.dtype == q.dtype and res.out.shape == v.shape
    assert res.lse.dtype == sd
    ea = torch_baseline(call)  # plain PyTorch in q's dtype: the precision yardstick
    keep = call.head_mask if call.head_mask is not None else torch.ones(B, H, dtype=torch.bool)
    lengths = call.lengths
    valid_rows = torch.arange(T)[None, :] < lengths[:, None]  # [B, T]
    worst = {}
    for name in FIELDS:
        x, r = getattr(res, name), getattr(ref, name)
        if name in ALL and name not in call.stats or name == "label_mass" and call.label_weights is None:
            assert x is None
            continue
        assert x is not None and x.dtype == (q.dtype if name == "out" else sd), name
        assert x.shape == r.shape, (name, x.shape, r.shape)
        # conventions, exactly
        km = keep[:, :, None].expand(B, H, T)
        pad = ~valid_rows[:, None, :].expand(B, H, T) & km
        if name != "colmass":
            xs = x if x.dim() == 3 else x.abs().amax(-1)
            assert bool((xs[pad] == 0).all()), f"{name}: padded rows must be exactly 0"
        else:
            assert bool((x[pad] == 0).all()), "colmass: padded keys must be exactly 0"
        if not bool(keep.all()):
            if name == "out":
                assert bool((x[~keep] == 0).all()), "masked head: out must be 0"
            else:
                assert bool(torch.isnan(x[~keep]).all()), f"masked head: {name} must be NaN"
        # accuracy: kept heads only
        mask = keep.reshape(B, H, *([1] * (x.dim() - 2)))
        err = max_err(x, r, mask)
        e = getattr(ea, name).to(r.dtype)
        e_ref = e.masked_fill(~(valid_rows[:, None, :, None] if x.dim() == 4 else valid_rows[:, None, :]), 0) \
            if name != "colmass" else e.masked_fill(~valid_rows[:, None, :], 0)
        err_eager = max_err(e_ref, r, mask)
        mag = float(r[mask.expand_as(r)].abs().nan_to_num(0, 0, 0).max()) if r.numel() and bool(keep.any()) else 0.0
        tol = 2 * err_eager + FLOOR[q.dtype] * (1 + mag)
        worst[name] = (err, tol)
        assert err <= tol, f"{name}: error {err:.3e} > tolerance {tol:.3e} (eager {q.dtype} error {err_eager:.3e})"
    return res, ref, worst


@pytest.mark.parametrize("T", [1, 2, 7, 63, 64, 65, 130, 257])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes(T, dtype):
    g = torch.Generator().manual_seed(T)
    B, H, D = 2, 3, 16
    q, k, v = (rand(B, H, T, D, dtype=dtype, gen=g) for _ in range(3))
    check(q, k, v, lengths=torch.tensor([T, max(0, T // 2)]))


def test_lengths_including_zero_and_full():
    g = torch.Generator().manual_seed(1)
    B, H, T, D = 4, 2, 70, 8
    q, k, v = (rand(B, H, T, D, gen=g) for _ in range(3))
    res, _, _ = check(q, k, v, lengths=torch.tensor([0, 70, 1, 33]))
    assert bool((res.out[0] == 0).all()) and bool((res.lse[0] == 0).all())


@pytest.mark.parametrize("shape", ["full", "HTT", "11TT", "TT", "B1T1"])
def test_bias_shapes(shape):
    g = torch.Generator().manual_seed(2)
    B, H, T, D = 2, 3, 45, 8
    q, k, v = (rand(B, H, T, D, gen=g) for _ in range(3))
    sizes = {"full": (B, H, T, T), "HTT": (H, T, T), "11TT": (1, 1, T, T), "TT": (T, T), "B1T1": (B, 1, T, 1)}
    bias = torch.randn(*sizes[shape], generator=g)
    check(q, k, v, bias=bias, lengths=torch.tensor([45, 20]))


def test_bias_float64_broadcast_with_float32_inputs():
    g = torch.Generator().manual_seed(3)
    q, k, v = (rand(1, 2, 33, 8, gen=g) for _ in range(3))
    check(q, k, v, bias=torch.randn(2, 33, 33, generator=g, dtype=torch.float64))


def test_bias_minus_inf_rows_are_empty():
    g = torch.Generator().manual_seed(4)
    B, H, T, D = 1, 2, 20, 8
    q, k, v = (rand(B, H, T, D, gen=g) for _ in range(3))
    bias = torch.randn(H, T, T, generator=g)
    bias[0, 3, :] = float("-inf")  # row 3 of head 0 admits no key
    bias[1, :, 5] = float("-inf")  # key 5 excluded for every row of head 1
    res, ref, _ = check(q, k, v, bias=bias)
    assert res.lse[0, 0, 3] == float("-inf") and bool((res.out[0, 0, 3] == 0).all())
    assert res.entropy[0, 0, 3] == 0 and res.maxweight[0, 0, 3] == 0


@pytest.mark.parametrize("mode", ["zero", "renorm"])
@pytest.mark.parametrize("span", [0, 1, 5, 40, 99, 100, 500])
def test_spans(mode, span):
    g = torch.Generator().manual_seed(span)
    B, H, T, D = 2, 2, 100, 8
    q, k, v = (rand(B, H, T, D, gen=g) for _ in range(3))
    check(q, k, v, lengths=torch.tensor([100, 57]), span=span, span_mode=mode,
          label_weights=torch.rand(B, T, 3, generator=g))


@pytest.mark.parametrize("mask", ["H_bool", "H_int", "BH_bool", "BH_int", "none_kept"])
def test_head_masks(mask):
    g = torch.Generator().manual_seed(5)
    B, H, T, D = 2, 4, 37, 8
    q, k, v = (rand(B, H, T, D, gen=g) for _ in range(3))
    hm = {"H_bool": torch.tensor([True, False, True, False]), "H_int": torch.tensor([0, 1, 1, 0]),
          "BH_bool": torch.tensor([[True, False, True, True], [False, True, True, False]]),
          "BH_int": torch.tensor([[1, 0, 1, 1], [0, 0, 1, 1]]), "none_kept": torch.zeros(H, dtype=torch.int64)}[mask]
    check(q, k, v, head_mask=hm, lengths=torch.tensor([37, 12]), label_weights=torch.rand(B, T, 2, generator=g))


@pytest.mark.parametrize("stats", [(), ("entropy",), ("distance",), ("colmass",), ("maxweight",),
                                   ("entropy", "colmass"), ("distance", "maxweight"), ALL])
def test_stat_subsets(stats):
    g = torch.Generator().manual_seed(6)
    B, H, T, D = 2, 2, 50, 8
    q, k, v = (rand(B, H, T, D, gen=g) for _ in range(3))
    res, _, _ = check(q, k, v, stats=stats, lengths=torch.tensor([50, 31]))
    for name in ALL:
        assert (getattr(res, name) is None) == (name not in stats)
    outs = torch.ops.satkern.fused_attention(q, k, v, torch.tensor([50, 31]), None, None, None, 0.3, -1, False,
                                             *[n in stats for n in ALL])
    for name, t in zip(ALL, outs[2:6]):
        if name not in stats:
            assert t.shape == (0,), "statistics not asked for come back as empty tensors [0]"
    assert outs[6].shape == (0,)


def test_label_weights():
    g = torch.Generator().manual_seed(7)
    B, H, T, D, L = 3, 2, 66, 8, 5
    q, k, v = (rand(B, H, T, D, gen=g) for _ in range(3))
    W = torch.rand(B, T, L, generator=g)
    check(q, k, v, label_weights=W, lengths=torch.tensor([66, 0, 40]))
    check(q, k, v, label_weights=W.double(), stats=())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(dtype):
    g = torch.Generator().manual_seed(8)
    B, H, T, D = 2, 2, 90, 16
    q, k, v = (rand(B, H, T, D, dtype=dtype, gen=g) for _ in range(3))
    res, _, _ = check(q, k, v, lengths=torch.tensor([90, 41]), label_weights=torch.rand(B, T, 3, generator=g),
                      span=10, span_mode="renorm")
    assert res.entropy.dtype == torch.float32


def test_non_contiguous_inputs():
    """q/k/v as HF hands them: [B, T, H, D] projections viewed as [B, H, T, D]."""
    g = torch.Generator().manual_seed(9)
    B, H, T, D = 2, 3, 41, 8
    q, k, v = (torch.randn(B, T, H * D, generator=g).view(B, T, H, D).transpose(1, 2) for _ in range(3))
    assert not q.is_contiguous()
    res, _, _ = check(q, k, v, lengths=torch.tensor([41, 17]), bias=torch.randn(H, T, T, generator=g).transpose(-1, -2))
    res2 = satkern.attention(q.contiguous(), k.contiguous(), v.contiguous(), backend="cpu", stats=ALL,
                             lengths=torch.tensor([41, 17]), bias=torch.randn(H, T, T, generator=g))
    assert res2.out.shape == res.out.shape


def test_deterministic_for_fixed_threads():
    g = torch.Generator().manual_seed(10)
    q, k, v = (rand(2, 3, 150, 16, gen=g) for _ in range(3))
    a = satkern.attention(q, k, v, backend="cpu", stats=ALL)
    b = satkern.attention(q, k, v, backend="cpu", stats=ALL)
    for name in FIELDS[:-1]:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


# ---- NaN only affects the rows whose computation touches it

def _clean_and_nan(seed, B=2, H=2, T=40, D=8):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (rand(B, H, T, D, gen=g) for _ in range(3))
    W = torch.rand(B, T, 3, generator=g)
    bias = torch.randn(B, H, T, T, generator=g)
    return q, k, v, W, bias


@pytest.mark.parametrize("mode", [None, "zero", "renorm"])
def test_nan_in_padded_data_does_not_leak(mode):
    q, k, v, W, bias = _clean_and_nan(11)
    lengths = torch.tensor([40, 23])
    kw = dict(lengths=lengths, label_weights=W, bias=bias, stats=ALL)
    if mode:
        kw.update(span=6, span_mode=mode)
    clean = satkern.attention(q, k, v, backend="cpu", **kw)
    q2, k2, v2, W2, b2 = q.clone(), k.clone(), v.clone(), W.clone(), bias.clone()
    for t in (q2, k2, v2):
        t[1, :, 23:] = float("nan")
    W2[1, 23:] = float("nan")
    b2[1, :, 23:, :] = float("nan")
    b2[1, :, :, 23:] = float("nan")
    dirty = satkern.attention(q2, k2, v2, backend="cpu", **{**kw, "label_weights": W2, "bias": b2})
    for name in FIELDS:
        x, y = getattr(dirty, name), getattr(clean, name)
        assert not bool(torch.isnan(x).any()), f"NaN in padded data leaked into {name}"
        assert torch.equal(x, y), name


def test_nan_in_valid_query_row_affects_only_that_row():
    q, k, v, W, bias = _clean_and_nan(12)
    kw = dict(lengths=torch.tensor([40, 30]), label_weights=W, stats=ALL)
    clean = satkern.attention(q, k, v, backend="cpu", **kw)
    q[0, 1, 7, 3] = float("nan")
    dirty = satkern.attention(q, k, v, backend="cpu", **kw)
    for name in ("out", "lse", "entropy", "distance", "maxweight", "label_mass"):
        x, y = getattr(dirty, name), getattr(clean, name)
        assert bool(torch.isnan(x[0, 1, 7]).all()), f"{name}: the NaN row must be NaN"
        rest = torch.ones(x.shape[:3], dtype=torch.bool)
        rest[0, 1, 7] = False
        assert torch.equal(x[rest], y[rest]), f"{name}: NaN leaked beyond its row"
    # colmass of head (0, 1) describes every row, so it is NaN on the admissible keys; others are clean
    assert bool(torch.isnan(dirty.colmass[0, 1, :40]).all())
    other = torch.ones(2, 2, dtype=torch.bool)
    other[0, 1] = False
    assert torch.equal(dirty.colmass[other], clean.colmass[other])
    # the reference agrees wherever it is finite
    ref = satkern.attention(q.double(), k.double(), v.double(), backend="reference",
                            **{**kw, "label_weights": W.double()})
    for name in ("out", "lse", "entropy", "distance", "maxweight", "label_mass"):
        x, r = getattr(dirty, name), getattr(ref, name)
        assert torch.equal(torch.isnan(x), torch.isnan(r)), name


def test_nan_in_key_renorm_affects_only_rows_in_band():
    q, k, v, W, bias = _clean_and_nan(13, T=120)
    r, j = 5, 60
    kw = dict(span=r, span_mode="renorm", stats=ALL)
    clean = satkern.attention(q, k, v, backend="cpu", **kw)
    k[1, 0, j, 0] = float("nan")
    dirty = satkern.attention(q, k, v, backend="cpu", **kw)
    rows = (torch.arange(120) - j).abs() <= r
    for name in ("out", "lse", "entropy", "distance", "maxweight"):
        x, y = getattr(dirty, name)[1, 0], getattr(clean, name)[1, 0]
        assert bool(torch.isnan(x[rows]).all()), name
        assert torch.equal(x[~rows], y[~rows]), f"{name}: NaN key leaked to rows outside its band"
        assert torch.equal(getattr(dirty, name)[0], getattr(clean, name)[0])


# ---- property-based

import hypothesis  # noqa: E402  (a test dependency: requirements-dev.txt)
from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def cases(draw):
    B = draw(st.integers(1, 3))
    H = draw(st.integers(1, 3))
    T = draw(st.integers(1, 80))
    D = draw(st.sampled_from([1, 3, 8, 16]))
    lengths = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
    span = draw(st.one_of(st.none(), st.integers(0, T + 3)))
    mode = draw(st.sampled_from(["zero", "renorm"]))
    stats = tuple(n for n in ALL if draw(st.booleans()))
    mask = draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=H, max_size=H)))
    bias = draw(st.sampled_from([None, "full", "heads"]))
    labels = draw(st.one_of(st.none(), st.integers(1, 4)))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    return B, H, T, D, lengths, span, mode, stats, mask, bias, labels, seed, dtype


@settings(max_examples=40, deadline=None)
@given(cases())
def test_property_matches_reference(case):
    B, H, T, D, lengths, span, mode, stats, mask, bias, labels, seed, dtype = case
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    kw = dict(lengths=torch.tensor(lengths), span=span, span_mode=mode, stats=stats,
              head_mask=None if mask is None else torch.tensor(mask))
    if bias == "full":
        kw["bias"] = torch.randn(B, H, T, T, generator=g, dtype=torch.float64)
    elif bias == "heads":
        kw["bias"] = torch.randn(H, 1, T, generator=g, dtype=torch.float64)
    if labels:
        kw["label_weights"] = torch.rand(B, T, labels, generator=g, dtype=torch.float64)
    check(q, k, v, **kw)


def test_auto_picks_cpu_and_empty_shapes():
    assert satkern.availability()["cpu"] == "available"
    q = torch.randn(1, 2, 5, 4)
    assert satkern.attention(q, q, q).backend == "cpu"
    for shape in [(0, 2, 5, 4), (1, 0, 5, 4), (2, 2, 0, 4)]:
        x = torch.randn(*shape)
        res = satkern.attention(x, x, x, backend="cpu", stats=ALL, label_weights=torch.rand(shape[0], shape[2], 2))
        assert res.out.shape == shape and res.colmass.shape == shape[:3] and res.label_mass.shape == (*shape[:3], 2)


def test_op_checks_arguments_in_cpp():
    q = torch.randn(1, 2, 5, 4)
    ln = torch.tensor([5])
    op = torch.ops.satkern.fused_attention
    flags = (1.0, -1, False, True, True, True, True)
    with pytest.raises(RuntimeError, match="'k'"):
        op(q, torch.randn(1, 2, 6, 4), q, ln, None, None, None, *flags)
    with pytest.raises(RuntimeError, match="'lengths'"):
        op(q, q, q, torch.tensor([6]), None, None, None, *flags)
    with pytest.raises(RuntimeError, match="'bias'"):
        op(q, q, q, ln, torch.randn(3, 5, 5), None, None, *flags)
    with pytest.raises(RuntimeError, match="'head_mask'"):
        op(q, q, q, ln, None, torch.ones(1, 3, dtype=torch.bool), None, *flags)
    with pytest.raises(RuntimeError, match="'label_weights'"):
        op(q, q, q, ln, None, None, torch.rand(1, 4, 2), *flags)
    with pytest.raises(RuntimeError, match="'v'"):
        op(q, q, q.double(), ln, None, None, None, *flags)

"""The triton backend on a real GPU against the float64 reference (skipped without CUDA or triton).

Tolerance rule (flash-attention's, satkern/ops/testing.py): per field, the kernel's worst error
against the float64 reference is at most 2x the worst error of plain PyTorch computing the same
quantity eagerly in the input dtype, plus a small floor; NaN / +-inf exactly where the reference has them.
Inputs are drawn fresh on every run (the seed is printed on failure); every output is poisoned before the
kernels write it (NaN, and a finite sentinel where NaN is a legitimate value: masked heads).

Most tests pin one kernel config (``launch.forced_config``) so the number of compiled variants stays
bounded; ``test_every_config`` runs each autotuning config, ``test_autotuned_benchmark_shapes`` the
autotuner itself. The GPU name is printed at the start of the module and attached to each test
(``record_property("gpu", ...)``, visible with ``--junitxml``).

Run: ``python -m pytest -q tests/gpu/test_triton_gpu.py`` on a CUDA machine (``-x -k matrix`` for a quick
pass). Expect a few minutes of Triton compilation on the first run (cached in ~/.triton afterwards).
"""
import os

import pytest
import torch

import satkern
from satkern.ops.contract import validate
from satkern.ops.dispatch import select
from satkern.ops.schema import op_args
from satkern.ops.triton.backend import triton_error

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or bool(triton_error()),
                                reason="needs a CUDA GPU and triton: " + (
                                    "no CUDA device" if not torch.cuda.is_available() else triton_error()))

ALL = satkern.STAT_NAMES
F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
DTYPES = (F16, BF16, F32)
HEAD_DIMS = (16, 32, 48, 64, 80, 96, 128, 256)  # any D <= 256 runs (padded to the next tile)
DEFAULT_FWD = (64, 64, 4, 3)  # one of launch._FWD_CONFIGS
DEFAULT_COL = (64, 64, 4, 3)  # one of launch._COL_CONFIGS
NAN, SENTINEL = float("nan"), -31337.0


@pytest.fixture(scope="module", autouse=True)
def _device_banner(pytestconfig):
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 PyTorch baseline must be real fp32
    torch.backends.cudnn.allow_tf32 = False
    import triton

    line = (f"triton GPU suite on {torch.cuda.get_device_name()} (cc {torch.cuda.get_device_capability()}), "
            f"torch {torch.__version__}, triton {triton.__version__}")
    rep = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if rep is not None:
        rep.write_line(line)
    print(line)
    yield


@pytest.fixture(autouse=True)
def _record_gpu(record_property):
    record_property("gpu", torch.cuda.get_device_name())


def _run(B, H, T, D, dtype, *, stats=ALL, layout="bhtd", poison=NAN, fwd=DEFAULT_FWD, col=DEFAULT_COL,
         extra=None):
    """Fresh random inputs (+ ``extra(gen, T)``), triton with poisoned outputs vs the float64 reference."""
    from satkern.ops.triton import launch
    from satkern.ops.testing import compare, failures

    seed = int.from_bytes(os.urandom(4), "little")
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device="cuda").to(dtype)

    if layout == "bhtd":
        q, k, v = randn(B, H, T, D), randn(B, H, T, D), randn(B, H, T, D)
    else:
        q, k, v = (randn(B, T, H, D).transpose(1, 2) for _ in range(3))
    kw = extra(gen, T) if extra is not None else {}
    call = validate(q, k, v, stats=stats, **kw)
    forced = launch.forced_config(fwd, col) if fwd is not None else launch.forced_config(None, None)
    with launch.poison_outputs(poison), forced:
        got = satkern.attention(q, k, v, stats=stats, backend="triton", **kw)
    torch.cuda.synchronize()
    report = compare(got, call)
    msg = failures(report)
    worst = {n: f"{r['err']:.2e} (torch {r['torch_err']:.2e})" for n, r in report.items() if "err" in r}
    assert not msg, (f"seed {seed}, B,H,T,D={B, H, T, D}, {dtype}, fwd {fwd}, col {col}, poison {poison}, "
                     f"{torch.cuda.get_device_name()}:\n{msg}\nall: {worst}")
    return got


def _rand_lengths(gen, B, T):
    lengths = torch.randint(0, T + 1, (B,), generator=gen, device="cuda")
    lengths[0] = T  # one full-length utterance
    return lengths


def _labels(gen, B, T, L=7):
    W = torch.rand(B, T, L, generator=gen, device="cuda")
    return W / W.sum(-1, keepdim=True)


# -------------------------------------------------------------------- dtype x head dim x length
@pytest.mark.parametrize("T", [1, 17, 200, 1031])
@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matrix(dtype, D, T):
    B = 3
    _run(B, 2, T, D, dtype,
         extra=lambda gen, T: {"lengths": _rand_lengths(gen, B, T), "label_weights": _labels(gen, B, T)})


# -------------------------------------------------------------------- features
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ["BHTT", "TT", "B1TT", "1H1T", "B11T"])
def test_bias(dtype, shape):
    B, H, T = 2, 3, 333

    def extra(gen, T):
        dims = {"BHTT": (B, H, T, T), "TT": (T, T), "B1TT": (B, 1, T, T), "1H1T": (1, H, 1, T),
                "B11T": (B, 1, 1, T)}[shape]
        bias = torch.randn(*dims, generator=gen, device="cuda") * 2
        return {"bias": bias.to(dtype), "lengths": _rand_lengths(gen, B, T)}

    _run(B, H, T, 64, dtype, extra=extra)


def test_bias_minus_inf_rows_and_keys():
    B, H, T = 2, 2, 300

    def extra(gen, T):
        bias = torch.randn(B, H, T, T, generator=gen, device="cuda")
        bias[0, 0, 3, :] = float("-inf")     # empty row: out 0, lse -inf, stats 0
        bias[1, 1, :, 70:140] = float("-inf")  # a whole key block masked for every row
        bias[0, 1, 200, :190] = float("-inf")
        return {"bias": bias, "lengths": torch.tensor([T, 250], device="cuda")}

    got = _run(B, H, T, 64, F16, extra=extra)
    assert got.lse[0, 0, 3].item() == float("-inf")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["zero", "renorm"])
@pytest.mark.parametrize("span", [0, 7, 32, 64, 200, 5000])
def test_span(dtype, mode, span):
    B, T = 2, 517
    _run(B, 2, T, 64, dtype,
         extra=lambda gen, T: {"span": span, "span_mode": mode, "lengths": _rand_lengths(gen, B, T),
                               "label_weights": _labels(gen, B, T, 5)})


@pytest.mark.parametrize("poison", [NAN, SENTINEL])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_head_mask(dtype, poison):
    B, H, T = 2, 4, 190
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]], device="cuda")
    _run(B, H, T, 64, dtype, poison=poison,
         extra=lambda gen, T: {"head_mask": mask, "lengths": _rand_lengths(gen, B, T),
                               "label_weights": _labels(gen, B, T), "span": 20, "span_mode": "renorm"})


@pytest.mark.parametrize("stats", [(), ("colmass",), ("entropy",), ("distance", "maxweight")])
def test_stat_subsets(stats):
    got = _run(2, 2, 260, 64, BF16, stats=stats, extra=lambda gen, T: {"lengths": _rand_lengths(gen, 2, T)})
    for name in ALL:
        assert (getattr(got, name) is None) == (name not in stats)


@pytest.mark.parametrize("D", [64, 80])
def test_noncontiguous_inputs(D):
    _run(2, 3, 150, D, F16, layout="bthd", extra=lambda gen, T: {"lengths": _rand_lengths(gen, 2, T)})


def test_poison_sentinel_everywhere():
    _run(2, 2, 129, 96, BF16, poison=SENTINEL,
         extra=lambda gen, T: {"lengths": torch.tensor([129, 64], device="cuda"),
                               "label_weights": _labels(gen, 2, T), "span": 9, "span_mode": "zero"})


# -------------------------------------------------------------------- every autotuning config
def _col_for(i):
    from satkern.ops.triton.launch import _COL_CONFIGS

    return _COL_CONFIGS[i % len(_COL_CONFIGS)]


@pytest.mark.parametrize("mode", [None, "zero", "renorm"])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("i", range(12))
def test_every_config(i, D, mode):
    from satkern.ops.triton.launch import _FWD_CONFIGS

    if i >= len(_FWD_CONFIGS):
        pytest.skip("fewer configs")
    B, T = 2, 700

    def extra(gen, T):
        kw = {"lengths": _rand_lengths(gen, B, T), "label_weights": _labels(gen, B, T)}
        if mode:
            kw.update(span=33, span_mode=mode)
        return kw

    try:
        _run(B, 2, T, D, BF16, fwd=_FWD_CONFIGS[i], col=_col_for(i), extra=extra)
    except Exception as e:  # a config too big for this GPU is skipped by the autotuner; say so here
        if "OutOfResources" in type(e).__name__ or "out of resource" in str(e):
            pytest.skip(f"config {_FWD_CONFIGS[i]} does not fit {torch.cuda.get_device_name()}: {e}")
        raise


# -------------------------------------------------------------------- autotuner on the benchmark shapes
@pytest.mark.parametrize("T", [512, 2048])
@pytest.mark.parametrize("what", ["out+lse", "stats", "all", "renorm32"])
def test_autotuned_benchmark_shapes(what, T):
    stats = {"out+lse": (), "stats": ("entropy", "distance", "maxweight"), "all": ALL, "renorm32": ()}[what]
    extra = (lambda gen, T: {"span": 32, "span_mode": "renorm"}) if what == "renorm32" else None
    _run(2, 4, T, 64, BF16, stats=stats, fwd=None, extra=extra)


# -------------------------------------------------------------------- dispatch, compile, determinism
def _call(T=256, D=64, dtype=BF16):
    q, k, v = (torch.randn(2, 2, T, D, device="cuda", dtype=dtype) for _ in range(3))
    return validate(q, k, v, lengths=torch.tensor([T, T // 2], device="cuda"), stats=ALL,
                    label_weights=torch.rand(2, T, 4, device="cuda"), span=16, span_mode="zero")


def test_auto_picks_triton_on_cuda():
    call = _call()
    assert not satkern.backends()["triton"].reasons(call)
    assert select(call).name == "triton"


def test_float64_refused_with_reason():
    x = torch.randn(1, 1, 8, 64, device="cuda", dtype=torch.float64)
    why = satkern.backends()["triton"].reasons(validate(x, x, x))
    assert any("float64" in w for w in why)


def test_deterministic_bitwise():
    call = _call(T=1000)
    a = torch.ops.satkern.fused_attention_triton(*op_args(call))
    b = torch.ops.satkern.fused_attention_triton(*op_args(call))
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_torch_compile_inductor_fullgraph():
    call = _call()
    args = op_args(call)

    def f(*a):
        out = torch.ops.satkern.fused_attention_triton(*a)
        return out[0].float().sum(-1) + out[1], out[2], out[4]

    eager = f(*args)
    compiled = torch.compile(f, fullgraph=True)(*args)
    for x, y in zip(eager, compiled):
        torch.testing.assert_close(x, y)


def test_opcheck():
    call = _call(T=64)
    torch.library.opcheck(torch.ops.satkern.fused_attention_triton.default, op_args(call),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))

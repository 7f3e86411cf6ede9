"""The CUDA backend against the float64 reference (needs a GPU and the CUDA kernels; skipped otherwise).

Tolerances follow the flash-attention rule (satkern/ops/testing.py): per field, the
kernel's worst error against the float64 reference must be at most 2x the worst
error of plain PyTorch computing the same quantity eagerly in the input dtype,
plus a small floor per dtype. NaN and -inf must appear exactly where the reference
has them.

Every output is poisoned before the kernels write it (SATKERN_CUDA_POISON, read
by csrc/cuda/attention_cuda.cu on every call): NaN, and a finite sentinel so a
NaN the kernel should have written (masked heads) cannot hide a missing write.

Run: ``python -m pytest -q tests/gpu/test_cuda_gpu.py`` on a CUDA machine after
``pip install --no-build-isolation -e .`` (or after
``satkern.ops.cuda_jit.build_cuda_extension()`` in a conftest).
"""
import math
import os

import pytest
import torch

import satkern
from satkern.ops.contract import validate
from satkern.ops.testing import compare, failures, torch_baseline

if os.environ.get("SATKERN_CUDA_JIT") == "1" and torch.cuda.is_available():  # build the kernels on the fly
    from satkern.ops.cuda_jit import build_cuda_extension

    build_cuda_extension(verbose=True)

from satkern.ops.cuda import cuda_kernels_error  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or bool(cuda_kernels_error()),
                                reason="needs a CUDA GPU and satkern's CUDA kernels: "
                                       + ("no CUDA device" if not torch.cuda.is_available() else cuda_kernels_error()))

ALL = satkern.STAT_NAMES
FLOOR = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
SCALED = ("lse", "colmass", "distance")  # floor relative to max(1, max |reference|); absolute for the rest
POISONS = ("nan", "-31337")


def rand(*shape, dtype, device="cuda"):
    return torch.randn(*shape, device=device, dtype=torch.float32).to(dtype)


def check(q, k, v, poison, monkeypatch, key="", **kw):
    kw.setdefault("stats", ALL)
    call = validate(q, k, v, **kw)
    ref = satkern.attention(q, k, v, backend="reference", **kw)
    # masked heads: the reference's lse/stats are NaN there (compare() checks NaN positions first and
    # measures errors only where the reference is finite); the baseline's out is 0 there, as the contract's
    base = torch_baseline(call, stats_dtype=torch.float32, zero_masked_heads=True)
    monkeypatch.setenv("SATKERN_CUDA_POISON", poison)
    got = satkern.attention(q, k, v, backend="cuda", **kw)
    torch.cuda.synchronize()
    assert got.backend == "cuda"
    # dtypes (out: input dtype, the rest float32), shapes, fields asked for and nothing else: compare() checks
    report = compare(got, call, ref, base, floor=FLOOR, scaled=SCALED)
    msg = failures(report)
    assert not msg, f"[{key}] {q.dtype}, shape {tuple(q.shape)}, poison {poison}:\n{msg}"
    return got


DTYPES = [torch.float16, torch.bfloat16, torch.float32]
DIMS = [64, 128]


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 7, 64, 65, 130, 257])
def test_plain_and_odd_T(T, dtype, D, poison, monkeypatch):
    q, k, v = (rand(2, 3, T, D, dtype=dtype) for _ in range(3))
    check(q, k, v, poison, monkeypatch, key=f"T={T}")


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_padding(dtype, D, poison, monkeypatch):
    T = 150
    q, k, v = (rand(4, 2, T, D, dtype=dtype) for _ in range(3))
    lengths = torch.tensor([150, 97, 1, 0])  # full, ragged, single frame, empty utterance
    check(q, k, v, poison, monkeypatch, lengths=lengths)


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["full", "TT", "key_padding", "masked_rows", "half_dtype"])
def test_bias(kind, dtype, poison, monkeypatch):
    B, H, T, D = 2, 3, 100, 64
    q, k, v = (rand(B, H, T, D, dtype=dtype) for _ in range(3))
    if kind == "full":
        bias = torch.randn(B, H, T, T, device="cuda")
    elif kind == "TT":  # broadcast over B and H (strides 0)
        bias = torch.randn(T, T, device="cuda")
    elif kind == "key_padding":
        bias = torch.zeros(B, 1, 1, T, device="cuda")
        bias[0, ..., 60:] = float("-inf")
    elif kind == "masked_rows":  # rows whose every score is -inf: out 0, lse -inf, stats 0
        bias = torch.randn(B, H, T, T, device="cuda")
        bias[:, :, 5] = float("-inf")
        bias[1, 2, 70:90] = float("-inf")
    else:
        bias = torch.randn(1, H, T, T, device="cuda").to(torch.float16)
    check(q, k, v, poison, monkeypatch, key=kind, bias=bias, lengths=torch.tensor([T, 81]))


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["zero", "renorm"])
@pytest.mark.parametrize("span", [0, 3, 70, 1000])
def test_span(span, mode, dtype, D, poison, monkeypatch):
    T = 200
    q, k, v = (rand(2, 2, T, D, dtype=dtype) for _ in range(3))
    check(q, k, v, poison, monkeypatch, key=f"{mode} r={span}", span=span, span_mode=mode,
          lengths=torch.tensor([200, 133]))


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_head_mask(dtype, poison, monkeypatch):
    B, H, T, D = 3, 4, 90, 64
    q, k, v = (rand(B, H, T, D, dtype=dtype) for _ in range(3))
    hm = torch.rand(B, H) > 0.5
    hm[0, 0], hm[0, 1] = True, False
    check(q, k, v, poison, monkeypatch, head_mask=hm, lengths=torch.tensor([90, 40, 0]), span=5)


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("L", [1, 5, 61])
def test_label_weights(L, dtype, D, poison, monkeypatch):
    B, H, T = 2, 2, 140
    q, k, v = (rand(B, H, T, D, dtype=dtype) for _ in range(3))
    W = torch.rand(B, T, L, device="cuda")
    W = W / W.sum(-1, keepdim=True)
    check(q, k, v, poison, monkeypatch, label_weights=W, lengths=torch.tensor([140, 77]), stats=("entropy",))


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stats", [(), ("colmass",), ("maxweight", "distance")])
def test_stat_subsets(stats, dtype, poison, monkeypatch):
    q, k, v = (rand(2, 3, 77, 128, dtype=dtype) for _ in range(3))
    got = check(q, k, v, poison, monkeypatch, stats=stats)
    for name in ALL:
        assert (getattr(got, name) is not None) == (name in stats)


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_inputs(dtype, monkeypatch):
    B, T, H, D = 2, 70, 3, 64
    x = rand(B, T, 3 * H * D, dtype=dtype).view(B, T, 3, H, D)
    q, k, v = (x[:, :, i].transpose(1, 2) for i in range(3))  # [B, H, T, D] views, head dim contiguous
    check(q, k, v, "nan", monkeypatch, lengths=torch.tensor([70, 33]))
    qt = rand(B, H, D, T, dtype=dtype).transpose(-1, -2)  # head dim NOT contiguous (binding copies)
    check(qt, k, v, "nan", monkeypatch)


def test_colmass_deterministic():
    q, k, v = (rand(4, 4, 300, 64, dtype=torch.bfloat16) for _ in range(3))
    a = satkern.attention(q, k, v, backend="cuda", stats=("colmass",)).colmass
    b = satkern.attention(q, k, v, backend="cuda", stats=("colmass",)).colmass
    assert torch.equal(a, b)


def test_metrics_agree():
    q, k, v = (rand(2, 4, 180, 64, dtype=torch.float16) for _ in range(3))
    lengths = torch.tensor([180, 120])
    m_ref = satkern.head_metrics(satkern.attention(q, k, v, lengths=lengths, stats=ALL, backend="reference"))
    m_cuda = satkern.head_metrics(satkern.attention(q, k, v, lengths=lengths, stats=ALL, backend="cuda"))
    for f in ("G", "V", "D", "W"):
        torch.testing.assert_close(getattr(m_cuda, f).double(), getattr(m_ref, f).double(), rtol=2e-2, atol=2e-3)


def test_opcheck():
    from satkern.ops import schema

    q, k, v = (rand(1, 2, 33, 64, dtype=torch.float16) for _ in range(3))
    call = validate(q, k, v, stats=ALL, label_weights=torch.rand(1, 33, 3, device="cuda"))
    torch.library.opcheck(torch.ops.satkern.fused_attention.default, schema.op_args(call),
                          test_utils=("test_schema", "test_faketensor"))


def test_auto_picks_cuda():
    q, k, v = (rand(1, 2, 16, 64, dtype=torch.float16) for _ in range(3))
    assert satkern.attention(q, k, v).backend in ("cuda", "triton")


def test_reasons_for_other_head_dims():
    q = rand(1, 2, 16, 48, dtype=torch.float16)
    with pytest.raises(satkern.BackendUnavailable, match="head dim 48"):
        satkern.attention(q, q, q, backend="cuda")


def test_large_T_no_overflow():
    # one long utterance (lse / stats offsets, many key blocks); reference on CPU in float64 would be
    # 4096^2 * 8 B per head, fine for H = 1.
    q, k, v = (rand(1, 1, 4096, 64, dtype=torch.bfloat16) for _ in range(3))
    got = satkern.attention(q, k, v, backend="cuda", stats=ALL)
    ref = satkern.attention(q, k, v, backend="reference", stats=ALL)
    assert torch.isfinite(got.out).all()
    torch.testing.assert_close(got.colmass.sum().double(), torch.tensor(4096.0, dtype=torch.float64,
                                                                         device="cuda"), rtol=1e-3, atol=0)
    torch.testing.assert_close(got.entropy.double(), ref.entropy.double(), rtol=0, atol=5e-2)
    assert math.isclose(got.maxweight.max().item(), ref.maxweight.max().item(), rel_tol=5e-2)

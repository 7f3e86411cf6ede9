"""The GPU benchmarks' composite pieces that run without a GPU: the check each FlexAttention composite passes
before it is timed (benchmarks/bench_triton.py check_composite) and the verdict lines that read its ratio."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_triton  # noqa: E402
import flex_composite as fc  # noqa: E402

import satkern  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _inputs():
    g = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    return [torch.randn(2, 3, 40, 32, generator=g) for _ in range(3)]


def test_check_composite_passes_the_composite_and_catches_a_wrong_statistic():
    q, k, v = _inputs()
    sk = satkern.attention(q, k, v, stats=fc.ALL_STATS, backend="cpu")
    res = fc.flex_statistics(q, k, v, fc.composite_masks(q, recipe="lse"), recipe="lse")
    chk = bench_triton.check_composite(q, k, v, res, sk)
    assert chk["ok"], chk["failures"]
    assert set(chk["vs_satkern"]) == {"out", "lse", *fc.ALL_STATS} and max(chk["vs_satkern"].values()) < 1e-4
    assert all(e <= b for e, b in chk["worst"].values())
    res["colmass"] = res["colmass"].clone()
    res["colmass"][0, 0, 3] += 0.5  # inside the checked slice (utterance 0, heads 0-1)
    bad = bench_triton.check_composite(q, k, v, res, sk)
    assert not bad["ok"] and "colmass" in bad["failures"] and bad["vs_satkern"]["colmass"] == pytest.approx(0.5, 1e-4)


def _row(impl, **kw):
    return dict(mode="composite", T=1024, impl=impl, ms=1.0, tflops=1.0, peak_frac=0.1, mem_mib=1.0, **kw)


def test_verdicts_read_only_a_composite_that_passed():
    rows = [_row("satkern triton (all stats)", vs_sdpa_flash=0.7, vs_flex_aux=0.9,
                 vs_composite={"values": (3.1, False), "lse": (2.6, True)})]
    text = "\n".join(bench_triton.verdicts(rows))
    assert "0.70x SDPA flash" in text and "0.90x flex_attention + AuxRequest" in text
    assert "values recipe FAILED its check" in text
    assert "2.60x the fastest checked FlexAttention composite (lse recipe) PASS" in text
    rows[0]["vs_composite"] = {"values": (0.8, False), "lse": (0.9, True)}
    assert "0.90x the fastest checked FlexAttention composite (lse recipe) FAIL" in "\n".join(
        bench_triton.verdicts(rows))


def test_default_shapes_reach_8192_and_include_the_composite():
    args = bench_triton.parse_args([])
    assert args.T == [512, 1024, 2048, 4096, 8192] and "composite" in args.modes and args.recipes == ["values", "lse"]
    assert (args.B, args.H, args.D, args.dtype) == (8, 12, 64, "bf16")

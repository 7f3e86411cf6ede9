"""The FlexAttention composite of issue 22 (benchmarks/flex_composite.py) against the float64 reference on the
CPU, where FlexAttention runs eagerly: every statistic, both recipes, padded batches included."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import flex_composite as fc  # noqa: E402

from satkern.ops.contract import validate  # noqa: E402
from satkern.ops.reference import reference_attention  # noqa: E402
from satkern.ops.testing import failures  # noqa: E402

FIELDS = ("out", "lse") + fc.ALL_STATS
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _inputs(B, H, T, D, dtype):
    seed = int.from_bytes(os.urandom(4), "little")
    g = torch.Generator().manual_seed(seed)
    return seed, [torch.randn(B, H, T, D, generator=g, dtype=torch.float64).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("recipe", fc.RECIPES)
@pytest.mark.parametrize("lengths", [None, [37, 20, 1]], ids=["full", "padded"])
def test_float64_equals_the_reference(recipe, lengths):
    seed, (q, k, v) = _inputs(3, 2, 37, 16, torch.float64)
    n = None if lengths is None else torch.tensor(lengths)
    res = fc.flex_statistics(q, k, v, fc.composite_masks(q, n, recipe=recipe), recipe=recipe)
    ref = reference_attention(validate(q, k, v, lengths=n, stats=fc.ALL_STATS))
    for name in FIELDS:
        got, want = res[name], getattr(ref, name)
        assert got.shape == want.shape and got.dtype == want.dtype, name
        err = float((got - want).abs().max())
        assert err <= 1e-12 * max(1.0, float(want.abs().max())), f"{name}: error {err:.3e} (seed {seed})"
    if n is not None:  # padded rows: every statistic and lse exactly 0, as the contract says
        pad = torch.arange(37)[None, :] >= n[:, None]
        for name in ("lse",) + fc.ALL_STATS:
            assert (res[name].permute(0, 2, 1)[pad] == 0).all(), name


@pytest.mark.parametrize("recipe", fc.RECIPES)
def test_float32_within_the_tolerance_rule(recipe):
    seed, (q, k, v) = _inputs(2, 3, 45, 32, torch.float32)
    n = torch.tensor([45, 30])
    res = fc.flex_statistics(q, k, v, fc.composite_masks(q, n, recipe=recipe), recipe=recipe)
    report = fc.check(q, k, v, res, lengths=n)
    assert set(FIELDS) <= {f for f, r in report.items() if "err" in r}
    assert not failures(report), f"seed {seed}\n{failures(report)}"


def test_check_reports_the_difference_from_satkern():
    import satkern

    _, (q, k, v) = _inputs(1, 2, 33, 16, torch.float32)
    res = fc.flex_statistics(q, k, v, fc.composite_masks(q, recipe="lse"), recipe="lse")
    sk = satkern.attention(q, k, v, stats=fc.ALL_STATS, backend="cpu")
    report = fc.check(q, k, v, res, satkern_result=sk)
    assert all(report[f]["vs_satkern"] < 1e-4 for f in FIELDS)
    res["distance"] = res["distance"] + 1.0  # a wrong statistic is caught by both measures
    report = fc.check(q, k, v, res, satkern_result=sk)
    assert not report["distance"]["ok"] and report["distance"]["vs_satkern"] == pytest.approx(1.0, abs=1e-4)


def test_bf16_value_outputs_round_the_distance_past_the_rule():
    """The issue's recipe reads the distance from a bf16 value output (relative rounding 2^-9 of a mean position
    near q); in bf16 that is outside the tolerance rule, while the lse recipe keeps it (why the benchmark times
    both and checks each before its ratio is read). The eager CPU path rounds like the GPU kernels: float32
    accumulation, output in the input dtype."""
    g = torch.Generator().manual_seed(22)
    q, k, v = (torch.randn(1, 2, 1024, 64, generator=g).to(torch.bfloat16) for _ in range(3))
    rep = {r: fc.check(q, k, v, fc.flex_statistics(q, k, v, fc.composite_masks(q, recipe=r), recipe=r))
           for r in fc.RECIPES}
    assert not failures(rep["lse"]), failures(rep["lse"])
    assert not rep["values"]["distance"]["ok"]
    assert all(rep["values"][f]["ok"] for f in FIELDS if f != "distance"), failures(rep["values"])


def test_bad_arguments():
    q = torch.randn(1, 1, 8, 16)
    with pytest.raises(ValueError, match="recipe"):
        fc.composite_masks(q, recipe="fast")
    with pytest.raises(ValueError, match="stats"):
        fc.flex_statistics(q, q, q, fc.composite_masks(q), stats=("entropy", "label_mass"))

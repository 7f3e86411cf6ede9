"""pytest-benchmark suite of the CPU backend (``pytest benchmarks/test_bench_cpu.py``; not part of `make test`).

The same variants as benchmarks/bench_cpu.py (float32, B=1, H=12, D=64, torch threads = cores):
satkern cpu with all four statistics vs SDPA vs eager at T=1024 and 4096, and renorm span r=32 at
T=4096 vs compiled flex_attention with a sliding-window block mask and dense SDPA. Compare them
with ``--benchmark-group-by=group``; the ratio table with targets comes from bench_cpu.py.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cpu  # noqa: E402

from satkern.ops.extension import extension_error  # noqa: E402

pytest.importorskip("pytest_benchmark")
pytestmark = pytest.mark.skipif(extension_error() is not None,
                                reason=f"C++ extension not built: {extension_error()}")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count())
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module", params=[1024, 4096], ids=lambda T: f"T{T}")
def inputs(request):
    return request.param, bench_cpu.make_inputs(request.param)


@pytest.mark.parametrize("variant", ["satkern", "sdpa", "eager"])
def test_full(benchmark, inputs, variant):
    T, (q, k, v) = inputs
    benchmark.group = f"all stats T={T}"
    f = {"satkern": bench_cpu.satkern_fn, "sdpa": bench_cpu.sdpa_fn, "eager": bench_cpu.eager_fn}[variant](q, k, v)
    benchmark.pedantic(f, warmup_rounds=1, rounds=5 if T > 1024 else 10)


@pytest.fixture(scope="module")
def inputs_4096():
    return bench_cpu.make_inputs(4096)


@pytest.mark.parametrize("variant", ["satkern-renorm", "flex", "sdpa-dense"])
def test_renorm_span32(benchmark, inputs_4096, variant):
    q, k, v = inputs_4096
    benchmark.group = "renorm r=32 T=4096"
    if variant == "satkern-renorm":
        f = bench_cpu.satkern_fn(q, k, v, span=32, span_mode="renorm")
    elif variant == "sdpa-dense":
        f = bench_cpu.sdpa_fn(q, k, v)
    else:
        try:
            f = bench_cpu.flex_fn(q, k, v, 32)
            f()  # compile before timing
        except Exception as e:  # no compiler / unsupported CPU build
            pytest.skip(f"flex_attention unavailable: {type(e).__name__}: {e}")
    benchmark.pedantic(f, warmup_rounds=1, rounds=10)

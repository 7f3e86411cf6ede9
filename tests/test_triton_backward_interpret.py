"""The Triton backward (satkern/ops/triton/backward.py) under the Triton interpreter (TRITON_INTERPRET=1, CPU).

As tests/test_triton_interpret.py: collected in a normal run, this file defines one test that re-runs itself
in a child pytest with TRITON_INTERPRET=1 (the variable must be set before the kernels are decorated); the
child runs the real cases. Gradients of the triton backend against the float64 reference under the
2x-PyTorch rule (satkern/ops/testing.py), tiny shapes (the interpreter is slow). Directly::

    TRITON_INTERPRET=1 .venv/bin/python -m pytest -q tests/test_triton_backward_interpret.py
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interpreter_child import IN_CHILD as _CHILD, run_in_interpreter, triton_missing  # noqa: E402

if not _CHILD:

    @pytest.mark.skipif(triton_missing(), reason="triton not installed")
    def test_triton_backward_suite_in_child_process():
        run_in_interpreter(__file__)

else:
    import torch

    import satkern
    from satkern.ops.triton import backward as triton_backward

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_autograd import DIFF_STATS, _compare_backend  # noqa: E402

    CASES = [
        ("lengths_all_stats", dict(B=1, H=2, T=20, D=32, lengths=[17], stats=DIFF_STATS), None),
        ("bias_TT_span_zero", dict(B=2, H=1, T=40, D=32, span=3, lengths=[40, 23], stats=("entropy",)), (40, 40)),
        ("renorm_bias_heads_mask", dict(B=1, H=2, T=70, D=32, span=5, span_mode="renorm", stats=("distance", "colmass"),
                                        head_mask=[[1, 0]]), (1, 2, 70, 70)),
        ("T1_rows_bias", dict(B=1, H=1, T=1, D=32, stats=DIFF_STATS), (1, 1, 1, 1)),
        ("length0", dict(B=2, H=1, T=9, D=32, lengths=[0, 9]), None),
        ("odd_T_D64", dict(B=1, H=1, T=37, D=64, stats=("entropy", "distance")), (1, 1, 37, 1)),
    ]

    @pytest.fixture
    def count_backward_calls(monkeypatch):
        calls = []
        real = triton_backward.fused_attention_backward

        def counting(*args):
            calls.append(1)
            return real(*args)

        monkeypatch.setattr(triton_backward, "fused_attention_backward", counting)
        return calls

    @pytest.mark.parametrize("name,kw,bias_shape", CASES, ids=[c[0] for c in CASES])
    def test_triton_grads_match_reference(name, kw, bias_shape, count_backward_calls):
        bad = _compare_backend("triton", name, kw, bias_shape)
        assert not bad, bad
        assert count_backward_calls, "the Triton backward did not run"

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_triton_grads_half_types(dtype, count_backward_calls):
        bad = _compare_backend("triton", f"half-{dtype}", dict(B=1, H=2, T=33, D=32, lengths=[30],
                                                               stats=("entropy", "distance")), (33, 33), dtype=dtype)
        assert not bad, bad
        assert count_backward_calls

    def test_triton_maxweight_gradient_raises():
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 1, 16, 32, generator=g).requires_grad_() for _ in range(3))
        res = satkern.attention(q, k, v, stats=("maxweight",), backend="triton")
        with pytest.raises(RuntimeError, match="'maxweight' is not differentiable"):
            res.maxweight.sum().backward()

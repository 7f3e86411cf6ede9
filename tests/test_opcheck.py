"""torch.library checks of the CPU implementation of satkern::fused_attention, and torch.compile."""

import pytest
import torch

import satkern
from satkern.ops.testing import compiler_missing
from satkern.ops import schema
from satkern.ops.contract import validate
from satkern.ops.extension import extension_error

pytestmark = pytest.mark.skipif(extension_error() is not None,
                                reason=f"C++ extension not built: {extension_error()}")

OP = torch.ops.satkern.fused_attention.default
ALL = satkern.STAT_NAMES


def _args(seed, *, B=2, H=2, T=19, D=8, dtype=torch.float32, **kw):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g).to(dtype) for _ in range(3))
    return schema.op_args(validate(q, k, v, **kw))


ARG_SETS = {
    "plain": lambda: _args(0),
    "all_stats_lengths": lambda: _args(1, lengths=torch.tensor([19, 7]), stats=ALL),
    "bias_broadcast_span_zero": lambda: _args(2, bias=torch.randn(2, 19, 19), span=3, stats=("entropy", "colmass")),
    "renorm_mask_labels": lambda: _args(3, span=4, span_mode="renorm", head_mask=torch.tensor([1, 1]),
                                        label_weights=torch.rand(2, 19, 3), stats=ALL),
    "float64": lambda: _args(4, dtype=torch.float64, stats=("distance", "maxweight")),
    "bfloat16": lambda: _args(5, dtype=torch.bfloat16, stats=ALL, lengths=torch.tensor([5, 19])),
}


@pytest.mark.parametrize("name", sorted(ARG_SETS))
def test_opcheck(name):
    torch.library.opcheck(OP, ARG_SETS[name]())


def test_opcheck_masked_head():
    # A masked head's statistics are NaN by contract; opcheck's eager-vs-AOT comparison does not
    # treat NaN == NaN, so that one check is left out here (the arg sets above cover it).
    args = _args(7, span=4, span_mode="renorm", head_mask=torch.tensor([1, 0]),
                 label_weights=torch.rand(2, 19, 3), stats=ALL)
    torch.library.opcheck(OP, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@pytest.mark.skipif(compiler_missing() is not None, reason=str(compiler_missing()))
def test_torch_compile_fullgraph_matches_eager():
    args = _args(6, lengths=torch.tensor([19, 11]), bias=torch.randn(2, 19, 19), label_weights=torch.rand(2, 19, 2),
                 stats=ALL)
    q = args[0]

    def f(q, k, v, lengths, bias, lw):
        outs = torch.ops.satkern.fused_attention(q, k, v, lengths, bias, None, lw, *args[7:])
        return outs[0] * 2.0, outs[1], outs[2], outs[4], outs[6]

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    eager = f(q, args[1], args[2], args[3], args[4], args[6])
    got = compiled(q, args[1], args[2], args[3], args[4], args[6])
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

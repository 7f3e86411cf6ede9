"""The ``torch.library`` schema of the fused op, declared once.

``satkern::fused_attention`` has per-device implementations registered in C++
(``csrc/cpu`` for CPU, ``csrc/cuda`` for CUDA); ``satkern::fused_attention_triton``
has the same schema and a Python (Triton) CUDA implementation. Both get the
same fake (shape-only) implementation so they trace under ``torch.compile``.

Arguments are the normalized :class:`~satkern.ops.contract.AttentionCall`:
``lengths`` int64 [B]; ``bias`` float, 4-d, broadcastable to [B,H,T,T] (any strides,
broadcast strides 0 allowed; the cpu and triton backends get the user's bias un-expanded, so its
gradient comes back in the user's shape); ``head_mask`` bool [B,H] (True = keep); ``label_weights`` float [B,T,L];
``span`` < 0 means no span; ``renorm`` selects the span mode. Statistics not asked
for come back as empty tensors of shape [0].

``satkern::fused_attention_backward`` (CPU: C++; CUDA: Triton) and
``satkern::fused_attention_triton_backward`` (Triton) are the gradients, wired up by
:mod:`satkern.ops.autograd`.

Backends that run one of these ops (cpu, cuda, triton) derive from :class:`TorchOpBackend`.
"""
from __future__ import annotations

import torch

from .dispatch import Backend

SCHEMA = ("(Tensor q, Tensor k, Tensor v, Tensor lengths, Tensor? bias, Tensor? head_mask, "
          "Tensor? label_weights, float scale, int span, bool renorm, bool want_entropy, "
          "bool want_distance, bool want_colmass, bool want_maxweight) -> "
          "(Tensor out, Tensor lse, Tensor entropy, Tensor distance, Tensor colmass, "
          "Tensor maxweight, Tensor label_mass)")

OP_NAMES = ("fused_attention", "fused_attention_triton")

_lib = torch.library.Library("satkern", "DEF")
for _name in OP_NAMES:
    _lib.define(_name + SCHEMA)


def _fake(q, k, v, lengths, bias, head_mask, label_weights, scale, span, renorm,
          want_entropy, want_distance, want_colmass, want_maxweight):
    B, H, T, D = q.shape
    sd = torch.float64 if q.dtype == torch.float64 else torch.float32
    row = q.new_empty((B, H, T), dtype=sd)
    none = q.new_empty((0,), dtype=sd)
    lm = none if label_weights is None else q.new_empty((B, H, T, label_weights.shape[-1]), dtype=sd)
    return (q.new_empty((B, H, T, v.shape[-1])), row,
            row.clone() if want_entropy else none.clone(),
            row.clone() if want_distance else none.clone(),
            row.clone() if want_colmass else none.clone(),
            row.clone() if want_maxweight else none.clone(),
            lm)


for _name in OP_NAMES:
    torch.library.register_fake("satkern::" + _name, _fake, lib=_lib)

# Gradients of out / lse / entropy / distance / colmass with respect to q, k, v and (when
# want_grad_bias) bias, given the forward's saved outputs. An absent or empty grad_* means no
# gradient flows into that output; entropy / distance are the forward's (empty when not asked).
# grad_bias has the bias's shape (summed over its broadcast dims), or is empty.
BACKWARD_SCHEMA = ("(Tensor? grad_out, Tensor? grad_lse, Tensor? grad_entropy, Tensor? grad_distance, "
                   "Tensor? grad_colmass, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
                   "Tensor entropy, Tensor distance, Tensor lengths, Tensor? bias, Tensor? head_mask, "
                   "float scale, int span, bool renorm, bool want_grad_bias) -> "
                   "(Tensor grad_q, Tensor grad_k, Tensor grad_v, Tensor grad_bias)")
BACKWARD_OP_NAMES = {"fused_attention": "fused_attention_backward",
                     "fused_attention_triton": "fused_attention_triton_backward"}
for _name in BACKWARD_OP_NAMES.values():
    _lib.define(_name + BACKWARD_SCHEMA)


def _fake_backward(grad_out, grad_lse, grad_entropy, grad_distance, grad_colmass, q, k, v, out, lse, entropy,
                   distance, lengths, bias, head_mask, scale, span, renorm, want_grad_bias):
    grad_bias = bias.new_empty(bias.shape) if want_grad_bias else q.new_empty((0,))
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), grad_bias


for _name in BACKWARD_OP_NAMES.values():
    torch.library.register_fake("satkern::" + _name, _fake_backward, lib=_lib)


def op_args(call, *, compact_bias: bool = True):
    """The positional arguments of the op for a validated call.

    ``compact_bias``: pass the user's bias as given (4-d, size 1 on broadcast dims), so its
    gradient is summed in the kernel and never materialized at [B,H,T,T]; else the expanded
    [B,H,T,T] view (backends whose kernels index the bias by the expanded strides).
    """
    bias = call.bias_compact if compact_bias else call.bias
    return (call.q, call.k, call.v, call.lengths, bias, call.head_mask, call.label_weights,
            float(call.scale), -1 if call.span is None else int(call.span), call.span_mode == "renorm",
            call.wants("entropy"), call.wants("distance"), call.wants("colmass"), call.wants("maxweight"))


def result_from_op(call, outs, backend: str):
    """Turn the op's 7-tuple into an AttentionResult (empty statistics become None)."""
    from .contract import AttentionResult

    out, lse, ent, dist, col, mw, lm = outs
    return AttentionResult(out=out, lse=lse,
                           entropy=ent if call.wants("entropy") else None,
                           distance=dist if call.wants("distance") else None,
                           colmass=col if call.wants("colmass") else None,
                           maxweight=mw if call.wants("maxweight") else None,
                           label_mass=lm if call.label_weights is not None else None,
                           lengths=call.lengths, backend=backend)


class TorchOpBackend(Backend):
    """A backend whose :meth:`run` is one call of the satkern op ``op_name`` on :func:`op_args`."""

    op_name: str = "fused_attention"
    compact_bias: bool = True  # see op_args

    def run(self, call):
        outs = getattr(torch.ops.satkern, self.op_name)(*op_args(call, compact_bias=self.compact_bias))
        return result_from_op(call, outs, self.name)

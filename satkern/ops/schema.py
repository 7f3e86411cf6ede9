"""The ``torch.library`` schema of the fused op, declared once.

``satkern::fused_attention`` has per-device implementations registered in C++
(``csrc/cpu`` for CPU, ``csrc/cuda`` for CUDA); ``satkern::fused_attention_triton``
has the same schema and a Python (Triton) CUDA implementation. Both get the
same fake (shape-only) implementation so they trace under ``torch.compile``.

Arguments are the normalized :class:`~satkern.ops.contract.AttentionCall`:
``lengths`` int64 [B]; ``bias`` float [B,H,T,T] (any strides, broadcast strides 0
allowed); ``head_mask`` bool [B,H] (True = keep); ``label_weights`` float [B,T,L];
``span`` < 0 means no span; ``renorm`` selects the span mode. Statistics not asked
for come back as empty tensors of shape [0].

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


def op_args(call):
    """The positional arguments of the op for a validated call."""
    return (call.q, call.k, call.v, call.lengths, call.bias, call.head_mask, call.label_weights,
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

    def run(self, call):
        outs = getattr(torch.ops.satkern, self.op_name)(*op_args(call))
        return result_from_op(call, outs, self.name)

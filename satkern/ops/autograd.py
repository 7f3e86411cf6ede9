"""Autograd of the satkern ops (``torch.library.register_autograd`` on the schema of :mod:`.schema`).

Differentiable outputs and their gradients with respect to ``q``, ``k``, ``v`` and ``bias``
(``bias`` when it requires grad; the gradient comes back in the bias's own shape, summed over
its broadcast dims). For a valid row i with probabilities p over its admissible keys j, s the
scaled scores:

==============  =====================================================  ========================
output          d output_i / d s_ij                                    note
==============  =====================================================  ========================
``out``         p_ij (dO_i.v_j [j in band] - dO_i.out_i)               FlashAttention-2
``lse``         p_ij
``entropy``     -p_ij (log p_ij + H_i)
``distance``    p_ij (abs(i - j) - distance_i)
``colmass``     sum_j g_j colmass_j has d/d s_ij = p_ij (g_j - r_i)    r_i = sum_k p_ik g_k
``maxweight``   not differentiable: a gradient flowing into it raises
``label_mass``  not differentiable: a gradient flowing into it raises
==============  =====================================================  ========================

Padded rows and keys, empty rows and masked heads (``head_mask`` 0) give and get no gradient
(masked heads are skipped). In span mode ``zero`` only ``out`` sees the band (its p is zeroed off
the band); the statistics' gradients use the whole distribution, as the statistics do.

Which kernel runs the backward: ``satkern::fused_attention`` (the ``cpu`` and ``cuda`` backends)
calls ``satkern::fused_attention_backward``, whose CPU implementation is C++
(``csrc/cpu/attention_cpu_backward.cpp``) and whose CUDA implementation is the Triton backward
(:mod:`satkern.ops.triton.backward`); ``satkern::fused_attention_triton`` calls
``satkern::fused_attention_triton_backward`` (Triton, CUDA or the CPU interpreter). The
``reference`` backend is plain torch and differentiates through its float64 map (the oracle).

Double backward is not implemented: differentiating a gradient raises a clear error.
"""
from __future__ import annotations

import torch

from . import schema

NOT_DIFFERENTIABLE = {
    5: ("maxweight", "a max over keys; use entropy or distance for a differentiable sharpness measure"),
    6: ("label_mass", "its label weights are data, and its gradient is not implemented"),
}


def _setup_context(ctx, inputs, output):
    (q, k, v, lengths, bias, head_mask, label_weights, scale, span, renorm,
     want_entropy, want_distance, want_colmass, want_maxweight) = inputs
    out, lse, entropy, distance, colmass, maxweight, label_mass = output
    ctx.save_for_backward(q, k, v, lengths, bias, head_mask, out, lse, entropy, distance)
    ctx.scale, ctx.span, ctx.renorm = float(scale), int(span), bool(renorm)
    ctx.has_stat = {"entropy": bool(want_entropy), "distance": bool(want_distance), "colmass": bool(want_colmass)}
    # outputs no gradient reaches arrive as None (not zeros): tells "no gradient" from a zero one
    ctx.set_materialize_grads(False)


def _make_backward(backward_op_name: str):
    def backward(ctx, grad_out, grad_lse, grad_entropy, grad_distance, grad_colmass, grad_maxweight,
                 grad_label_mass):
        for index, grad in ((5, grad_maxweight), (6, grad_label_mass)):
            if grad is not None and grad.numel() > 0:  # (an output not asked for is empty: nothing flows)
                name, why = NOT_DIFFERENTIABLE[index]
                raise RuntimeError(f"satkern.attention: '{name}' is not differentiable ({why}); a gradient "
                                   f"flowed into it. Use res.{name}.detach() in the loss.")
        q, k, v, lengths, bias, head_mask, out, lse, entropy, distance = ctx.saved_tensors
        nones = (None,) * 14
        needs = ctx.needs_input_grad
        want_bias = bool(needs[4]) and bias is not None
        if not (any(needs[:3]) or want_bias):
            return nones
        if all(g is None for g in (grad_out, grad_lse, grad_entropy, grad_distance, grad_colmass)):
            return nones
        gq, gk, gv, gb = getattr(torch.ops.satkern, backward_op_name)(
            grad_out, grad_lse, grad_entropy if ctx.has_stat["entropy"] else None,
            grad_distance if ctx.has_stat["distance"] else None,
            grad_colmass if ctx.has_stat["colmass"] else None,
            q, k, v, out, lse, entropy, distance, lengths, bias, head_mask, ctx.scale, ctx.span, ctx.renorm,
            want_bias)
        return (gq if needs[0] else None, gk if needs[1] else None, gv if needs[2] else None, None,
                gb if want_bias else None) + (None,) * 9

    return backward


for _forward, _backward in schema.BACKWARD_OP_NAMES.items():
    torch.library.register_autograd("satkern::" + _forward, _make_backward(_backward),
                                    setup_context=_setup_context, lib=schema._lib)


def _no_double_backward(ctx, *grads):
    raise RuntimeError("satkern.attention: double backward (a gradient of a gradient, e.g. gradgradcheck or a "
                       "gradient penalty) is not implemented; use backend='reference' for it")


def _setup_nothing(ctx, inputs, output):
    pass


for _backward in schema.BACKWARD_OP_NAMES.values():
    torch.library.register_autograd("satkern::" + _backward, _no_double_backward, setup_context=_setup_nothing,
                                    lib=schema._lib)

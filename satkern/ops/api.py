"""``satkern.attention``: validate once, pick a backend, run it."""
from __future__ import annotations

from .contract import AttentionResult, validate
from .dispatch import select


def attention(q, k, v, *, lengths=None, scale=None, bias=None, stats=(), span=None, span_mode="zero",
              head_mask=None, label_weights=None, backend="auto") -> AttentionResult:
    """Self-attention with per-row statistics computed on the fly.

    Args:
        q, k, v: ``[B, H, T, D]`` tensors (any strides), same dtype and device.
        lengths: int ``[B]``, valid frames per utterance (prefix padding). Keys at or past
            the length are excluded; padded query rows output 0 and their statistics are 0.
        scale: score scale, default ``D ** -0.5``.
        bias: additive float scores broadcastable to ``[B, H, T, T]``.
        stats: subset of ``("entropy", "distance", "colmass", "maxweight")``.
        span: ``r`` frames; with ``span_mode="zero"`` weights with abs(q-k) > r are zeroed
            after the softmax (no renormalization; statistics describe the map before
            zeroing); with ``"renorm"`` those keys are masked before the softmax::

                r = 1, T = 5, "renorm" admissible keys (x):
                    k 0 1 2 3 4
                q 0   x x . . .
                  1   x x x . .
                  2   . x x x .
                  3   . . x x x
                  4   . . . x x

        head_mask: ``[H]`` or ``[B, H]``, 0/1 or bool; a masked head outputs 0 and its
            statistics are NaN; backends skip its work.
        label_weights: float ``[B, T, L]``; asks for ``label_mass`` ``[B, H, T, L]``.
        backend: ``"auto"``, ``"reference"``, ``"cpu"``, ``"triton"`` or ``"cuda"``.

    Returns:
        :class:`satkern.AttentionResult`.
    """
    call = validate(q, k, v, lengths=lengths, scale=scale, bias=bias, stats=stats, span=span,
                    span_mode=span_mode, head_mask=head_mask, label_weights=label_weights)
    return select(call, backend).run(call)

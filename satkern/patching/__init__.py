"""``satkern.patch``: run a real speech model's self-attention through satkern.

One line gives every head's statistics, head pruning and span refinement::

    h = satkern.patch(model, stats=("entropy", "distance", "colmass", "maxweight"))
    with h:                      # or h.remove(); removal restores the model exactly
        model(inputs, attention_mask=mask)
    h.metrics                    # HeadMetrics(G, V, D, W), each float32 [U, L, H]

Model families: :mod:`.hf` (transformers: one table of families, plus WavLM) and
:mod:`.s3prl` (satkern's Mockingjay / TERA / AudioALBERT). The capture and refinement
live in :mod:`.core`.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn

from ..ops import STAT_NAMES
from .core import Patch, lengths_from_mask

__all__ = ["patch", "Patch", "lengths_from_mask"]


def patch(model, stats: Iterable[str] = STAT_NAMES, prune=None, span=None, span_mode: str = "zero",
          backend: str = "auto", head_gates: bool = False) -> Patch:
    """Reroute every self-attention layer of ``model`` through :func:`satkern.attention`.

    Args:
        model: an ``nn.Module`` (a transformers wav2vec2 / HuBERT / data2vec-audio / UniSpeech(-SAT) /
            SEW / wav2vec2-conformer / WavLM model or whisper encoder, or a satkern s3prl model), or a
            :class:`satkern.models.SpeechModel`.
        stats: statistics to capture, a subset of ``("entropy", "distance", "colmass", "maxweight")``
            (metrics G, D, V, W respectively); ``()`` captures nothing (refinement only).
        prune: set of ``(layer, head)`` pairs whose maps are zeroed (output 0, no compute).
        span: ``r`` frames for every layer, or ``{layer: r}``; ``span_mode`` ``"zero"`` (zero
            weights with abs(q-k) > r after the softmax, no renormalization) or ``"renorm"``
            (mask those keys before the softmax).
        backend: the :func:`satkern.attention` backend (``"auto"``, ``"reference"``, ``"cpu"``, ...).
        head_gates: add ``h.head_gates``, an ``[L, H]`` parameter of ones multiplied into each head's
            output; after ``loss.backward()``, ``h.head_importance()`` gives Michel et al.'s gradient
            head importance (normalized per layer, or raw).

    Returns:
        :class:`Patch`, already applied; a context manager whose exit (or ``.remove()``) undoes it.

    Patched models train: gradients flow through every backend (``satkern.attention`` is
    differentiable). In training mode the attention dropout must be 0 (satkern has no attention
    dropout): a model in training mode with attention dropout raises, naming the config field.
    Outputs equal the model's own eager attention to float rounding, padded frames included.
    """
    inner = getattr(model, "model", None)
    if not isinstance(model, nn.Module) and isinstance(inner, nn.Module):
        model = inner  # a SpeechModel
    if not isinstance(model, nn.Module):
        raise TypeError(f"satkern.patch: argument 'model' must be an nn.Module or a SpeechModel; "
                        f"got {type(model).__name__}")
    from . import hf, s3prl

    h = Patch(model, stats=stats, prune=prune, span=span, span_mode=span_mode, backend=backend,
              head_gates=head_gates)
    hf_found = hf.find_modules(model)
    s3_found = s3prl.find_modules(model)
    order = {name: i for i, (name, _) in enumerate(model.named_modules(remove_duplicate=False))}
    names = sorted([(n, m) for n, m, _ in hf_found] + s3_found, key=lambda nm: order[nm[0]])
    h._add_layers([m for _, m in names])
    h._finish_setup(supported_description())
    try:
        if hf_found:
            hf.install(h, model, hf_found)
        if s3_found:
            s3prl.install(h, s3_found, model)
    except BaseException:
        h.remove()
        raise
    return h


def supported_description() -> str:
    """What the adapters can patch (for error messages), from their own tables."""
    from . import hf, s3prl

    return f"Hugging Face {', '.join(f.model_type for f in hf.FAMILIES)}; {s3prl.DESCRIPTION}"

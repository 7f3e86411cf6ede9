"""``satkern.patch``: run a real speech model's self-attention through satkern.

One line gives every head's statistics, head pruning and span refinement::

    h = satkern.patch(model, stats=("entropy", "distance", "colmass", "maxweight"))
    with h:                      # or h.remove(); removal restores the model exactly
        model(inputs, attention_mask=mask)
    h.metrics                    # HeadMetrics(G, V, D, W), each float32 [U, L, H]

Layout: :mod:`.core` (:class:`Patch`: routing, refinement, exact undo), :mod:`.observers` (what each
layer call hands out: :class:`LayerCall`, :class:`Observer`), the patch's own observers
(:mod:`.capture`: metrics, lengths, NaN flags; :mod:`.relations`: phoneme-relation sums;
:mod:`.chunks`: chunked utterances), :mod:`.refine` (pruned heads, span, padded rows),
:mod:`.adapter` (the adapter API) and the adapters: :mod:`.hf` (transformers: one table of
families, plus WavLM) and :mod:`.s3prl` (satkern's Mockingjay / TERA / AudioALBERT).
"""
from __future__ import annotations

from typing import Iterable, List, Tuple

from torch import nn

from ..ops import STAT_NAMES
from .adapter import Adapter
from .core import Patch, owner
from .masks import lengths_from_mask
from .observers import ChunkPlan, ChunkSlot, LayerCall, Observer

__all__ = ["patch", "Patch", "lengths_from_mask", "Observer", "LayerCall", "ChunkSlot", "ChunkPlan", "Adapter",
           "adapters", "register_adapter", "unregister_adapter", "owner"]

_EXTRA_ADAPTERS: List[Adapter] = []


def register_adapter(adapter: Adapter) -> None:
    """Teach :func:`patch` another kind of model (:mod:`satkern.patching.adapter` says what an adapter does)."""
    if not isinstance(adapter, Adapter):
        raise TypeError(f"satkern.patching.register_adapter: expected an Adapter; got {type(adapter).__name__}")
    if adapter not in _EXTRA_ADAPTERS:
        _EXTRA_ADAPTERS.append(adapter)


def unregister_adapter(adapter: Adapter) -> None:
    """Forget an adapter :func:`register_adapter` added (built-in adapters stay)."""
    if adapter in _EXTRA_ADAPTERS:
        _EXTRA_ADAPTERS.remove(adapter)


def adapters() -> Tuple[Adapter, ...]:
    """The adapters :func:`patch` asks, built-in ones first."""
    from . import hf, s3prl

    return (hf.ADAPTER, s3prl.ADAPTER) + tuple(_EXTRA_ADAPTERS)


def patch(model, stats: Iterable[str] = STAT_NAMES, prune=None, span=None, span_mode: str = "zero",
          backend: str = "auto", head_gates: bool = False, observers: Iterable = ()) -> Patch:
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
        observers: :class:`Observer` s (or functions of one :class:`LayerCall`) handed every layer call,
            after the patch's own (see :meth:`Patch.observe`).

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
    found = [(a, name, m) for a in adapters() for name, m in a.find(model)]
    order = {name: i for i, (name, _) in enumerate(model.named_modules(remove_duplicate=False))}
    found.sort(key=lambda anm: order[anm[1]])
    h = Patch(model, [m for _, _, m in found], stats=stats, prune=prune, span=span, span_mode=span_mode,
              backend=backend, head_gates=head_gates, observers=observers, supported=supported_description())
    try:
        for a in adapters():
            mine = [(name, m) for b, name, m in found if b is a]
            if mine:
                a.install(h, model, mine)
    except BaseException:
        h.remove()
        raise
    return h


def supported_description() -> str:
    """What the adapters can patch (for error messages), from their own tables."""
    return "; ".join(a.description for a in adapters())

"""The observer API of :class:`satkern.Patch`: what a patched layer hands out per attention call.

A patch reroutes every attention layer through :func:`satkern.attention` and refines it (pruned
heads, span, head gates); everything that *records* something about those calls is an observer.
The patch's own results (``h.metrics``, ``h.lengths``, ``h.nan_heads``, the phoneme-relation sums)
come from observers it installs itself (:mod:`.capture`, :mod:`.relations`); map capture, timing
and anything new are observers added by the code that wants them::

    h = satkern.patch(model, observers=[obs])     # or h.observe(obs) / h.observe(fn, stats=(...))

Per layer call the patch builds one :class:`LayerCall` and calls, for each observer,
``label_weights(call)`` (which may supply the op's ``label_weights``), then ``before(call)`` in the
order the observers were added, runs the op and the refinement, then ``after(call)`` (``call.result``
and ``call.out`` set) in the reverse order: an observer's ``before`` / ``after`` pair encloses the op
and every observer added after it. A model that runs utterances in chunks (s3prl's
``sequence_length``) announces them: ``begin_chunks(plan)`` before, ``end_chunks(plan)`` after,
and in between each call carries its :class:`ChunkSlot`.

An observer may ask for statistics (``stats``, a subset of :data:`satkern.STAT_NAMES`): the op then
computes them for every call (``call.result.entropy`` etc.); statistics nobody asked for are not
computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..ops import STAT_NAMES, AttentionResult
from ..ops.maps import attention_map


@dataclass(frozen=True)
class ChunkSlot:
    """The part of a chunked forward one call computes: slot ``index`` (the j-th chunks).

    * ``utterances`` int64 ``[b_j]``: which utterances of the forward's batch the call's rows are;
    * ``offsets`` ``[b_j]``: where the chunk's frames start in the utterance's concatenated output;
    * ``frames`` ``[b_j]``: model frames of each chunk (the call's ``lengths``);
    * ``utterance_frames`` ``[b_j]``: each utterance's whole length (the sum of its chunks).
    """

    index: int
    utterances: torch.Tensor
    offsets: torch.Tensor
    frames: torch.Tensor
    utterance_frames: torch.Tensor


@dataclass
class ChunkPlan:
    """A chunked forward, from ``begin_chunks`` to ``end_chunks``: ``batch`` utterances, their
    ``slots``, ``total`` int64 ``[batch]`` frames per utterance. ``complete`` (read at
    ``end_chunks``): every layer finished every slot (False after an interrupted forward)."""

    batch: int
    slots: List[ChunkSlot]
    total: torch.Tensor
    num_layers: int
    started: Dict[int, int] = field(default_factory=dict)  # layer -> calls begun
    finished: Dict[int, int] = field(default_factory=dict)  # layer -> calls that returned

    @property
    def complete(self) -> bool:
        return all(self.finished.get(l, 0) == len(self.slots) for l in range(self.num_layers))


@dataclass
class LayerCall:
    """One patched layer's attention call, as observers see it (shapes: B batch, H heads, T frames, D head dim).

    * ``layer``: index in model order (``0 .. h.num_layers - 1``); ``module``: the attention module;
    * ``q``, ``k``, ``v``: ``[B, H, T, D]``, exactly what the layer handed to the op;
    * ``lengths``: int ``[B]`` valid frames (on q's device) or ``None`` (no padding);
      ``host_lengths``: the same on the CPU (read once per forward), or ``None``;
    * ``scale`` (float, ``D ** -0.5`` unless the layer gave one), ``bias`` (``None`` or broadcastable to
      ``[B, H, T, T]``);
    * the layer's refinement: ``span`` (frames or ``None``), ``span_mode``, ``head_mask`` (bool ``[H]``
      kept heads, on q's device, or ``None``: every head kept);
    * ``chunk``: the :class:`ChunkSlot` of a chunked forward, else ``None``;
    * ``label_weights``: what the op was given (``None`` unless an observer supplied it);
    * after the op: ``result`` (:class:`satkern.AttentionResult`: ``out``, ``lse``, the statistics
      asked for, ``lengths``) and ``out``, the layer's output ``[B, H, T, D]`` after the refinement
      (padded rows as the model computes them, head gates applied). Read the output from ``out``:
      outside autograd the refinement writes the padded rows into ``result.out`` in place.
    """

    layer: int
    module: nn.Module
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    lengths: Optional[torch.Tensor]
    host_lengths: Optional[torch.Tensor]
    scale: float
    bias: Optional[torch.Tensor]
    span: Optional[int]
    span_mode: str
    head_mask: Optional[torch.Tensor]
    chunk: Optional[ChunkSlot] = None
    label_weights: Optional[torch.Tensor] = None
    result: Optional[AttentionResult] = None
    out: Optional[torch.Tensor] = None

    def attention_map(self, heads: Optional[Sequence[int]] = None, *, dtype: torch.dtype = torch.float64,
                      for_statistics: bool = False) -> torch.Tensor:
        """The maps ``[B, h, T, T]`` of this call (:func:`satkern.attention_map`, float64 by default) for the
        heads ``heads`` (default all, in that order), with this layer's span and pruned heads; formed
        only for those heads. ``for_statistics``: in span mode ``zero``, the map before the zeroing."""
        q, k, bias, mask = self.q, self.k, self.bias, self.head_mask
        if heads is not None:
            B, H, T, _ = q.shape
            idx = torch.as_tensor(list(heads), dtype=torch.long, device=q.device)
            q, k = q.index_select(1, idx), k.index_select(1, idx)
            bias = None if bias is None else bias.expand(B, H, T, T).index_select(1, idx)
            mask = None if mask is None else mask.index_select(0, idx)
        return attention_map(q, k, lengths=self.lengths, scale=self.scale, bias=bias, span=self.span,
                             span_mode=self.span_mode, head_mask=mask, dtype=dtype, for_statistics=for_statistics)


class Observer:
    """Base class of patch observers: override what you need (every hook defaults to nothing).

    * ``stats``: statistics the observer needs from the op (a subset of :data:`satkern.STAT_NAMES`);
    * ``attach(patch)``: called once when added (``patch.num_layers`` / ``patch.num_heads`` are known);
    * ``label_weights(call) -> Tensor [B, T, Y] or None``: frame label weights for this call's op
      (``label_mass`` in ``call.result``); at most one observer may give them for a call;
    * ``before(call)`` / ``after(call)``: around the op (see the module docstring for the order);
    * ``begin_chunks(plan)`` / ``end_chunks(plan)``: around a chunked forward;
    * ``reset()``: forget what was recorded (:meth:`satkern.Patch.reset` calls it).
    """

    stats: Tuple[str, ...] = ()

    def attach(self, patch) -> None:
        pass

    def label_weights(self, call: LayerCall) -> Optional[torch.Tensor]:
        return None

    def before(self, call: LayerCall) -> None:
        pass

    def after(self, call: LayerCall) -> None:
        pass

    def begin_chunks(self, plan: ChunkPlan) -> None:
        pass

    def end_chunks(self, plan: ChunkPlan) -> None:
        pass

    def reset(self) -> None:
        pass


class FunctionObserver(Observer):
    """A plain function ``fn(call)`` as an observer: called after each layer call."""

    def __init__(self, fn: Callable[[LayerCall], None], stats: Iterable[str] = ()):
        self.fn = fn
        self.stats = checked_stats(stats, "observer stats")

    def after(self, call: LayerCall) -> None:
        self.fn(call)


def checked_stats(stats: Iterable[str], what: str) -> Tuple[str, ...]:
    """``stats`` as a tuple of statistic names; anything else raises ``ValueError`` naming ``what``."""
    stats = (stats,) if isinstance(stats, str) else tuple(stats)
    unknown = [s for s in stats if s not in STAT_NAMES]
    if unknown:
        raise ValueError(f"satkern.patch: argument '{what}' must be a subset of {STAT_NAMES}; got {unknown}")
    return stats


__all__ = ["LayerCall", "ChunkSlot", "ChunkPlan", "Observer", "FunctionObserver", "checked_stats"]

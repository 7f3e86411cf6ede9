"""The patch's default observers of per-utterance rows: head metrics with lengths, and NaN flags.

Both keep, per layer, one ``[B, ...]`` row block per forward, on the device (no wait for it per
layer); a chunked forward's slots are buffered and merged into one row per utterance when it ends
(:class:`PerUtteranceRows`). :class:`satkern.Patch` reads them for ``h.metrics``, ``h.lengths`` and
``h.nan_heads``.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Tuple

import torch

from ..metrics import METRIC_STATS, HeadMetrics, head_metrics
from .chunks import merge_chunk_metrics
from .observers import ChunkPlan, ChunkSlot, LayerCall, Observer

EMPTY_WARNING = "satkern.patch: utterances of length 0 have no metrics (NaN)"


class PerUtteranceRows(Observer):
    """Per layer, a list of row blocks (one row per utterance): :meth:`rows_of` a plain call's rows;
    :meth:`merge` a chunked forward's slots into one block (only when every layer finished every slot:
    an interrupted forward records nothing)."""

    def attach(self, patch) -> None:
        self.num_layers, self.num_heads = patch.num_layers, patch.num_heads
        self.reset()

    def reset(self) -> None:
        self.blocks: Dict[int, List] = {}  # layer -> row blocks in the order of the forwards
        self._slots: Optional[Dict[int, List[Tuple[ChunkSlot, object]]]] = None
        self._device = torch.device("cpu")

    def rows_of(self, call: LayerCall):
        raise NotImplementedError

    def merge(self, plan: ChunkPlan, slots: List[Tuple[ChunkSlot, object]], device: torch.device):
        raise NotImplementedError

    def after(self, call: LayerCall) -> None:
        rows = self.rows_of(call)
        if call.chunk is None:
            self.blocks.setdefault(call.layer, []).append(rows)
        else:
            self._slots.setdefault(call.layer, []).append((call.chunk, rows))
            self._device = call.result.lengths.device

    def begin_chunks(self, plan: ChunkPlan) -> None:
        self._slots = {}

    def end_chunks(self, plan: ChunkPlan) -> None:
        slots, self._slots = self._slots, None
        if not plan.complete:
            return  # an interrupted forward: nothing recorded (the layers would see unequal utterances)
        for layer in range(self.num_layers):
            self.blocks.setdefault(layer, []).append(self.merge(plan, slots[layer], self._device))


class HeadMetricsCapture(PerUtteranceRows):
    """``h.metrics`` and ``h.lengths``: per layer and forward, the call's lengths and the head metrics
    ``which`` (names of :data:`satkern.metrics.METRIC_STATS`), each ``[B, H]``, kept float32."""

    def __init__(self, which: Tuple[str, ...]):
        self.which = tuple(which)
        self.stats = tuple(METRIC_STATS[w] for w in self.which)

    def rows_of(self, call: LayerCall) -> Dict[str, torch.Tensor]:
        res = call.result
        rows = {"lengths": res.lengths.detach()}  # kept on the device: no sync per layer
        if not self.which:
            return rows
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty utterances (or chunks): NaN; warned once below
            m = head_metrics(res, lengths=res.lengths, which=self.which, warn_empty=False)
        for w in self.which:
            rows[w] = getattr(m, w).detach()
        host = call.host_lengths
        if call.chunk is None:
            rows.update({w: rows[w].to(torch.float32) for w in self.which})
            if call.layer == 0 and host is not None and bool((host == 0).any()):  # host values
                warnings.warn(EMPTY_WARNING, stacklevel=5)
        return rows

    def merge(self, plan: ChunkPlan, slots, device: torch.device) -> Dict[str, torch.Tensor]:
        parts = [{w: rows[w] for w in self.which} for _, rows in slots]  # per slot: {metric: [b_j, H]}
        dev = next((t.device for p in parts for t in p.values()), device)
        out = {"lengths": plan.total.to(dev)}
        if self.which:
            merged = merge_chunk_metrics([(s.utterances, s.frames) for s, _ in slots], parts, plan.total, self.which)
            out.update({w: merged[w].to(torch.float32) for w in self.which})
        return out

    def end_chunks(self, plan: ChunkPlan) -> None:
        super().end_chunks(plan)
        if plan.complete and self.which and bool((plan.total == 0).any()):
            warnings.warn(EMPTY_WARNING, stacklevel=4)

    @property
    def lengths(self) -> torch.Tensor:
        """Attention frames per utterance seen, int64 ``[U]``."""
        parts = [b["lengths"] for b in self.blocks.get(0, [])]
        return torch.cat(parts).cpu() if parts else torch.zeros(0, dtype=torch.int64)

    def metrics(self) -> HeadMetrics:
        """Each metric float32 ``[U, L, H]`` (``None`` if not asked for)."""
        out = HeadMetrics()
        if not self.which:
            return out
        counts = {l: sum(int(b["lengths"].shape[0]) for b in self.blocks.get(l, [])) for l in range(self.num_layers)}
        if len(set(counts.values())) != 1:
            raise RuntimeError(f"satkern.Patch.metrics: layers saw different numbers of utterances {counts} "
                               f"(a forward was interrupted, or layers were skipped, e.g. LayerDrop)")
        for w in self.which:
            per_layer = []
            for l in range(self.num_layers):
                parts = [b[w] for b in self.blocks.get(l, [])]
                per_layer.append(torch.cat(parts).cpu() if parts else torch.zeros(0, self.num_heads))
            setattr(out, w, torch.stack(per_layer, dim=1))
        return out


class NanCapture(PerUtteranceRows):
    """``h.nan_heads``: per utterance, layer and head, whether a valid row of the head's map was NaN
    (a NaN query poisons the head's colmass, G and V, as the definitions give); pruned heads (NaN by
    convention) are not counted. :meth:`warn_once` warns naming layer and head."""

    def reset(self) -> None:
        super().reset()
        self.warned = False  # the warning is given once per patch

    def rows_of(self, call: LayerCall) -> torch.Tensor:
        res = call.result
        B, H, T = res.lse.shape
        lengths = res.lengths.to(res.lse.device)
        valid = torch.arange(T, device=res.lse.device)[None, None, :] < lengths[:, None, None]
        bad = (torch.isnan(res.lse) & valid).any(-1)
        if call.head_mask is not None:
            bad = bad & call.head_mask.to(device=bad.device, dtype=torch.bool).expand(B, H)
        return bad  # [B, H], stays on the device

    def merge(self, plan: ChunkPlan, slots, device: torch.device) -> torch.Tensor:
        bad = torch.zeros(plan.batch, self.num_heads, dtype=torch.bool, device=device)
        for slot, flags in slots:
            bad[slot.utterances.to(bad.device)] |= flags.to(bad.device)
        return bad

    def flags(self) -> torch.Tensor:
        """bool ``[U, L, H]``."""
        per_layer = [torch.cat(self.blocks[l]).cpu() if self.blocks.get(l) else
                     torch.zeros(0, self.num_heads, dtype=torch.bool) for l in range(self.num_layers)]
        if len({t.shape[0] for t in per_layer}) != 1:
            return torch.zeros(0, self.num_layers, self.num_heads, dtype=torch.bool)
        return torch.stack(per_layer, dim=1)

    def warn_once(self) -> None:
        """Called by ``Patch.metrics``: the warning points at the line that read the metrics."""
        if self.warned:
            return
        bad = self.flags()
        if not bool(bad.any()):
            return
        self.warned = True
        pairs = sorted({(int(l), int(h)) for _, l, h in bad.nonzero().tolist()})
        shown = ", ".join(f"layer {l} head {h}" for l, h in pairs[:4]) + (
            f" and {len(pairs) - 4} more" if len(pairs) > 4 else "")
        warnings.warn(f"satkern.patch: NaN in the attention of {shown} for {int(bad.any(-1).any(-1).sum())} "
                      f"utterance(s): a NaN query row makes that head's colmass, G and V NaN (as the definitions "
                      f"give); check the inputs and weights (Patch.nan_heads says where)", RuntimeWarning,
                      stacklevel=3)


__all__ = ["PerUtteranceRows", "HeadMetricsCapture", "NanCapture"]

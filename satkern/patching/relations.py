"""The patch's phoneme-relation observer (METRICS.md sec. 6): ``h.set_labels``, ``h.prm_counts``,
``h.prm_base``, ``h.prm_utterances``.

Given frame label weights ``W [B, T, Y]`` for the next forward, it hands them to the op of every layer
(``label_weights``: the kernel then returns ``label_mass = A W``) and sums, per layer,
``P'_u = (1/T_u) W^T label_mass`` over the utterances, and once per forward ``P_U,u`` (uniform
attention). In a chunked forward the labels are sliced per chunk and ``T_u`` is the utterance's whole
length, so the sums are those of its block-diagonal map.
"""
from __future__ import annotations

from typing import Optional

import torch

from .chunks import slice_chunk_labels
from .observers import ChunkPlan, LayerCall, Observer


def valid_labels(W: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``W`` as float64 with the rows past each utterance's length zeroed."""
    T = W.shape[1]
    valid = (torch.arange(T, device=lengths.device)[None, :] < lengths[:, None])  # [B, T]
    return torch.where(valid[..., None], W.to(device=lengths.device, dtype=torch.float64),
                       torch.zeros((), dtype=torch.float64, device=lengths.device))


class PhonemeRelationCapture(Observer):
    """Sums of ``P'_u`` per layer and head (``prm_counts [L, H, Y, Y]``), of ``P_U,u`` (``prm_base [Y, Y]``),
    and the count of utterances with a labelled frame (``prm_utterances``), float64 on the CPU."""

    def attach(self, patch) -> None:
        self.num_layers, self.num_heads = patch.num_layers, patch.num_heads
        self.reset()

    def reset(self) -> None:
        self.prm_counts: Optional[torch.Tensor] = None
        self.prm_base: Optional[torch.Tensor] = None
        self.prm_utterances = 0
        self._labels: Optional[torch.Tensor] = None  # for the next (or current) forward
        self._used: set = set()  # layers that used them in this forward
        self._chunk_labels: Optional[torch.Tensor] = None  # the labels of a chunked forward
        self._given: Optional[torch.Tensor] = None  # what label_weights() handed the current call

    def set_labels(self, W: torch.Tensor) -> None:
        if not isinstance(W, torch.Tensor) or W.dim() != 3 or not W.dtype.is_floating_point:
            raise ValueError("satkern.Patch.set_labels: W must be a float tensor [B, T_model, Y]; got "
                             + (f"shape {tuple(W.shape)}, dtype {W.dtype}" if isinstance(W, torch.Tensor)
                                else type(W).__name__))
        if self.prm_counts is not None and W.shape[-1] != self.prm_counts.shape[-1]:
            raise ValueError(f"satkern.Patch.set_labels: {W.shape[-1]} labels, but the PRM sums so far have "
                             f"{self.prm_counts.shape[-1]}; call reset() to change the label set")
        self._labels = W
        self._used = set()

    # ------------------------------------------------------------------ observer hooks
    def label_weights(self, call: LayerCall) -> Optional[torch.Tensor]:
        B, _, T, _ = call.q.shape
        if call.chunk is not None:
            W = self._chunk_labels
            W = None if W is None else slice_chunk_labels(W, call.chunk, T)
        else:
            W = self._labels
        if W is not None and (W.shape[0] != B or W.shape[1] != T):
            raise ValueError(f"satkern.Patch: labels of shape {tuple(W.shape)} do not fit layer {call.layer}'s "
                             f"batch of {B} x {T} attention frames")
        if W is not None and W.device != call.q.device:  # moved once per forward, not once per layer
            W = W.to(device=call.q.device)
            if call.chunk is None:
                self._labels = W
        self._given = W
        return W

    def after(self, call: LayerCall) -> None:
        W, self._given = self._given, None
        if W is None:
            return
        res = call.result
        if call.chunk is not None:
            self._add_counts(call.layer, res, W, call.chunk.utterance_frames.to(res.lengths.device))
            return
        self._add_counts(call.layer, res, W, res.lengths)
        if not self._used:  # once per forward: the uniform-attention baseline
            self._add_base(W, res.lengths)
        self._used.add(call.layer)
        if len(self._used) == self.num_layers:
            self._labels = None
            self._used = set()

    def begin_chunks(self, plan: ChunkPlan) -> None:
        self._chunk_labels = self._labels

    def end_chunks(self, plan: ChunkPlan) -> None:
        W, self._chunk_labels = self._chunk_labels, None
        if not plan.complete:
            return  # an interrupted forward: the labels stay for the next one
        if W is not None:  # the uniform-attention baseline, once, over each utterance's whole frames
            self._add_base(W, plan.total.to(W.device))
            self._labels = None
            self._used = set()

    # ------------------------------------------------------------------ sums
    def _ensure(self, Y: int) -> None:
        if self.prm_counts is None:
            self.prm_counts = torch.zeros(self.num_layers, self.num_heads, Y, Y, dtype=torch.float64)
            self.prm_base = torch.zeros(Y, Y, dtype=torch.float64)

    def _add_counts(self, layer: int, res, W: torch.Tensor, utterance_lengths: torch.Tensor) -> None:
        """``prm_counts[layer] += sum_u (1/T_u) W^T label_mass`` (T_u: the utterance's whole length,
        which is the call's length unless the call is one chunk of it)."""
        self._ensure(W.shape[-1])
        Wm = valid_labels(W, res.lengths)
        nonempty = (res.lengths > 0) & (utterance_lengths > 0)
        Tf = torch.where(nonempty, utterance_lengths, torch.ones_like(utterance_lengths)).to(torch.float64)
        lm = res.label_mass.to(torch.float64)  # [B, H, T, Y]; 0 on padded rows, NaN on pruned heads
        p_prime = torch.einsum("btm,bhtn->bhmn", Wm, lm) / Tf[:, None, None, None]
        self.prm_counts[layer] += p_prime[nonempty].sum(0).to("cpu")

    def _add_base(self, W: torch.Tensor, lengths: torch.Tensor) -> None:
        """Once per forward: ``prm_base += sum_u P_U,u`` and the count of utterances in the maps."""
        self._ensure(W.shape[-1])
        Wm = valid_labels(W, lengths)
        nonempty = lengths > 0
        Tf = torch.where(nonempty, lengths, torch.ones_like(lengths)).to(torch.float64)
        # an utterance with no labelled frame (all-zero rows: e.g. no alignment) adds nothing to the sums
        # and is not counted among the utterances of the relation maps
        labelled = nonempty & (Wm.sum((1, 2)) > 0)
        col = Wm.sum(1)  # [B, Y] = W^T 1
        base = col[:, :, None] * col[:, None, :] / (Tf * Tf)[:, None, None]
        self.prm_base += base[nonempty].sum(0).to("cpu")
        self.prm_utterances += int(labelled.sum())


__all__ = ["PhonemeRelationCapture", "valid_labels"]

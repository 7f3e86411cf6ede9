"""s3prl-format models (Mockingjay / TERA / AudioALBERT, :class:`~satkern.models.s3prl.S3prlTransformer`)
as a :class:`~satkern.models.speech_model.SpeechModel`: waveforms -> the checkpoint's acoustic features
(log-mel / fbank / linear, deltas, CMVN), stacked ``downsample_rate`` frames per model frame; inputs
longer than the checkpoint's ``task.sequence_length`` run in s3prl's chunks unless ``whole_sequence``."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..speech_model import SpeechModel


class S3prlSpeechModel(SpeechModel):
    family = "s3prl"
    supports_head_mask = True  # S3prlTransformer.forward(..., head_mask=[L, H])

    def __init__(self, model: nn.Module, name: str, random_weights: bool = False, whole_sequence: bool = False):
        super().__init__(model, name, int(model.sample_rate), int(model.frame_stride), random_weights)
        if whole_sequence:
            self.whole_sequence = True

    @property
    def num_layers(self) -> int:
        return int(self.model.num_layers)

    @property
    def num_heads(self) -> int:
        return int(self.model.num_heads)

    def num_frames(self, num_samples: int) -> int:
        return int(self.model.num_frames(int(num_samples)))

    # -- s3prl's sequence_length chunking ---------------------------------------------------
    @property
    def whole_sequence(self) -> bool:
        """True: every input runs at once, ignoring the checkpoint's ``task.sequence_length``."""
        return bool(self.model.whole_sequence)

    @whole_sequence.setter
    def whole_sequence(self, value: bool) -> None:
        self.model.whole_sequence = bool(value)

    @property
    def chunks_long_inputs(self) -> bool:
        return bool(self.model.chunking)

    def num_chunks(self, num_samples: int) -> int:
        """Pieces an utterance is run in: inputs longer than ``task.sequence_length`` feature frames are
        split as s3prl's upstream splits them (unless :attr:`whole_sequence`); 1 otherwise."""
        features = self.model.features
        if features is None:
            return 1
        return len(self.model.chunk_sizes(features.num_frames(int(num_samples))))

    def chunking_record(self, utterances_chunked: int) -> dict:
        seq = int(self.model.sequence_length)
        if not seq:
            mode = "whole sequence (no sequence_length in the checkpoint)"
        elif self.whole_sequence:
            mode = "whole sequence (--s3prl-whole-sequence)"
        else:
            mode = "s3prl chunks (inputs longer than sequence_length run in torch.chunk pieces)"
        return {"s3prl": {"sequence_length": seq, "mode": mode, "utterances_chunked": int(utterances_chunked)}}

    def label_weights(self, segments, num_samples: int, label_index) -> torch.Tensor:
        """As :meth:`SpeechModel.label_weights`, chunk by chunk for an input run in ``sequence_length``
        chunks (each chunk's frames start at its own first sample)."""
        from ...corpus.framing import frame_label_weights

        n = int(num_samples)
        if self.num_chunks(n) <= 1:
            return super().label_weights(segments, n, label_index)
        hop = self.model.features.hop_length
        plain = [((seg.start, seg.end, seg.label) if hasattr(seg, "label") else tuple(seg)) for seg in segments]
        rows = []
        for start, _, frames in self.model.chunk_pieces(self.model.features.num_frames(n)):
            offset = start * hop  # the chunk's first sample
            shifted = [(a - offset, b - offset, lab) for a, b, lab in plain]
            rows.append(frame_label_weights(shifted, max(n - offset, 0), self.frame_stride, frames, label_index))
        return torch.cat(rows)

    # -- running it -----------------------------------------------------------------------------
    def prepare(self, waveforms) -> Tuple[dict, torch.Tensor]:
        waves = self._waveforms(waveforms)
        device = self._device()
        feats, lengths = self.model.extract_features([w.to(device) for w in waves])
        r = int(self.model.downsample_rate or 1)
        if r > 1:
            # Frame stacking: an utterance alone keeps floor(frames / r) stacked frames, but in a
            # padded batch s3prl would also keep its partial last group (padded with zeros). Trim
            # every utterance to whole groups so a batch gives exactly what each utterance gives alone.
            # (An utterance the model splits into sequence_length chunks is trimmed chunk by chunk
            # in its forward instead.)
            lengths = torch.as_tensor(lengths, dtype=torch.int64)
            chunked = torch.tensor([len(self.model.chunk_sizes(int(n))) > 1 for n in lengths.tolist()],
                                   dtype=torch.bool)
            lengths = torch.where(chunked, lengths, lengths // r * r)
            keep = torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths.to(feats.device)[:, None]
            feats = feats * keep[..., None].to(feats.dtype)
            feats = feats[:, : int(lengths.max()) if len(lengths) else 0]
        frames = self.model.model_lengths(torch.as_tensor(lengths, dtype=torch.int64), feats.shape[1])
        return {"feats": feats, "lengths": lengths}, torch.as_tensor(frames, dtype=torch.int64).cpu()

    def pretraining_head(self, *, checkpoint=None, trust: bool = False) -> Optional[nn.Module]:
        """The checkpoint's ``SpecHead`` (the reconstruction head Mockingjay / TERA pre-train), from
        ``checkpoint`` or else the file the model was loaded from; ``None`` when there is none."""
        from .spec_head import load_spec_head

        path = checkpoint or (getattr(self.model, "checkpoint_info", None) or {}).get("path")
        return load_spec_head(path, self.model, trust=trust) if path else None

    def reconstruction_target(self, inputs) -> Optional[torch.Tensor]:
        """The stacked input features (s3prl's ``spec_stacked``) the ``SpecHead`` reconstructs."""
        from .model import stack_frames

        return stack_frames(inputs["feats"], int(self.model.downsample_rate or 1))

    @property
    def supports_layer_cache(self) -> bool:
        return True

    def forward_cached(self, inputs, frame_lengths: torch.Tensor, first_refined: int, cache: dict) -> torch.Tensor:
        """The last hidden state, reusing and filling ``cache`` {layer: its input hidden state}.

        Equals ``self(inputs).last_hidden_state``: the same modules in the same order
        (:class:`~satkern.models.s3prl.model.S3prlEncoder`'s loop), started at the latest cached layer
        input that a refinement beginning at layer ``first_refined`` leaves unchanged (layer ``l <=
        first_refined``). A batch with an utterance longer than ``task.sequence_length`` runs in s3prl's
        chunks exactly as :meth:`forward` runs it (slot by slot, each chunk with its own position
        encodings from 0); the cache then holds one such dict per slot, under ``("chunk", j)``."""
        from .model import stacked_lengths

        model = self.model
        feats = inputs["feats"]
        lengths = torch.as_tensor(inputs["lengths"], device=feats.device).to(torch.int64)
        if not (model.chunking and bool((lengths > model.sequence_length).any())):
            return self._forward_cached_whole(feats, frame_lengths.to(feats.device), first_refined, cache)
        B = feats.shape[0]
        slots, pieces, total = model.chunk_slots(lengths)
        out = feats.new_zeros(B, max(total), model.config.hidden_size)
        model.announce_chunks(B, slots)
        try:
            for j, (idx, offsets, frames) in enumerate(slots):
                x, kept = model.chunk_batch(feats, pieces, j, idx)
                chunk_lengths = stacked_lengths(kept, x.shape[1], model.config.downsample_rate)
                hidden = self._forward_cached_whole(x, chunk_lengths, first_refined, cache.setdefault(("chunk", j), {}))
                for i, u in enumerate(idx):
                    out[u, offsets[i]:offsets[i] + frames[i]] = hidden[i, :frames[i]]
        finally:
            model.end_announced_chunks()
        return out

    def _forward_cached_whole(self, feats: torch.Tensor, lengths: torch.Tensor, first_refined: int,
                              cache: dict) -> torch.Tensor:
        """:meth:`forward_cached` of features that run at once (``lengths``: model frames)."""
        from .model import position_encoding, stack_frames

        model = self.model
        layers = list(model.encoder.layer)
        start = max((l for l in cache if isinstance(l, int) and l <= first_refined), default=None)
        if start is None:
            x = stack_frames(feats, model.config.downsample_rate)
            pos = position_encoding(x.shape[1], model.config.hidden_size).to(device=x.device, dtype=x.dtype)
            hidden, start = model.input_representations(x, pos), 0
        else:
            hidden = cache[start]
        for i in range(start, len(layers)):
            if i <= first_refined and i not in cache:
                cache[i] = hidden
            layers[i].attention.self.layer_index = i
            hidden, _ = layers[i](hidden, lengths)
        if model.encoder.pre_layer_norm:
            hidden = model.encoder.LayerNorm[-1](hidden)
        return hidden

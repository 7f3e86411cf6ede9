"""Transformers speech models (wav2vec2, HuBERT, WavLM, data2vec-audio, UniSpeech(-SAT), SEW,
wav2vec2-conformer) as a :class:`~satkern.models.speech_model.SpeechModel`: waveforms in, zero-padded with
a sample mask; attention frames from the convolutional feature extractor (times SEW's squeeze factor)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from . import hf as _hf
from .feature_encoder import DEFAULT_CHUNK_FRAMES, ChunkedFeatureEncoder, unsupported_reason
from .speech_model import SpeechModel


class HFSpeechModel(SpeechModel):
    """A transformers encoder model; ``do_normalize``: zero mean, unit variance per utterance (from the
    model folder's ``preprocessor_config.json``, else transformers' convention for its extractor)."""

    family = "hf"

    def __init__(self, model: nn.Module, name: str, random_weights: bool = False, path: Optional[str] = None):
        cfg = model.config
        super().__init__(model, name, _hf.SAMPLE_RATE, _hf.attention_stride(cfg), random_weights)
        self.do_normalize = bool(_hf.preprocessor_settings(path, cfg)["do_normalize"])
        # inputs of more than this many conv frames run the feature encoder in pieces (0: never)
        self.feature_encoder_chunk_frames = DEFAULT_CHUNK_FRAMES

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def num_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    def num_frames(self, num_samples: int) -> int:
        cfg = self.model.config
        return _hf.conv_frames(cfg, int(num_samples)) // int(getattr(cfg, "squeeze_factor", 1) or 1)

    def prepare(self, waveforms) -> Tuple[dict, torch.Tensor]:
        waves = self._waveforms(waveforms)
        n = torch.tensor([len(w) for w in waves], dtype=torch.int64)
        N = int(n.max())
        x = torch.zeros(len(waves), N)
        mask = torch.zeros(len(waves), N, dtype=torch.long)
        for i, w in enumerate(waves):
            if self.do_normalize and len(w):
                # transformers' Wav2Vec2FeatureExtractor: zero mean, unit variance per utterance
                w = (w - w.mean()) / torch.sqrt(w.var(unbiased=False) + 1e-7)
            x[i, :len(w)] = w
            mask[i, :len(w)] = 1
        device = self._device()
        inputs = {"input_values": x.to(device), "attention_mask": mask.to(device)}
        return inputs, _hf.attention_frames(self.model.config, n, N)

    def forward(self, inputs, attention_mask: Optional[torch.Tensor] = None, **kwargs):
        """``model(**inputs, **kwargs)`` for a batch from :meth:`prepare`, batched exactly as each utterance alone.

        ``inputs`` is the dict :meth:`prepare` returns, or the padded waveforms ``input_values [B, N]``
        with ``attention_mask`` (1 = valid sample), as ``model(input_values, attention_mask=mask)``
        (a prefix mask: samples first, padding after).

        Front ends with ``feat_extract_norm="group"`` (HuBERT-base, wav2vec2-base) normalize their first
        convolution over time, so zero padding would change every shorter utterance's features. For
        those, the convolutional feature encoder runs once per utterance on its own samples (the rest
        of the model still runs batched; padded frames are zeroed by the encoder before they can reach
        a valid frame).

        Long inputs (more than :attr:`feature_encoder_chunk_frames` frames) in eval mode: the feature
        encoder runs in pieces (:class:`~satkern.models.feature_encoder.ChunkedFeatureEncoder`), with
        the same result and one piece's activations in memory instead of the whole recording's.
        """
        inputs = self._inputs_dict(inputs, attention_mask)
        encoder = self._feature_encoder()
        x = inputs["input_values"]
        per_utterance = (encoder is not None and getattr(self.model.config, "feat_extract_norm", None) == "group"
                         and "attention_mask" in inputs and x.shape[0] > 1)
        chunked = self._chunked_encoder(encoder)
        in_pieces = chunked is not None and chunked.applies(x.shape[-1])
        if not (per_utterance or in_pieces):
            return self.model(**inputs, **kwargs)
        samples = inputs["attention_mask"].sum(-1).tolist() if per_utterance else None
        whole = type(encoder).forward

        def encode(values):  # [b, n] -> [b, C, T], in pieces when long
            if chunked is not None and chunked.applies(values.shape[-1]):
                return chunked(values)
            return whole(encoder, values)

        def feature_encoder_forward(input_values):
            if samples is None:
                return encode(input_values)
            frames = _hf.conv_frames(self.model.config, input_values.shape[-1])  # of the padded length
            ones = [encode(input_values[i:i + 1, :int(n)]) for i, n in enumerate(samples)]  # [1, C, T_i]
            out = ones[0].new_zeros((len(ones), ones[0].shape[1], frames))
            for i, one in enumerate(ones):
                out[i, :, :one.shape[-1]] = one[0]
            return out

        encoder.forward = feature_encoder_forward
        try:
            return self.model(**inputs, **kwargs)
        finally:
            del encoder.forward  # back to the class's forward

    def _chunked_encoder(self, encoder: Optional[nn.Module]) -> Optional[ChunkedFeatureEncoder]:
        """The piecewise feature encoder, or ``None`` (off, training mode, or an encoder it does not fit)."""
        if encoder is None or not self.feature_encoder_chunk_frames or encoder.training:
            return None
        if unsupported_reason(encoder) is not None:
            return None
        return ChunkedFeatureEncoder(encoder, self.feature_encoder_chunk_frames)

    def describe(self) -> dict:
        """:meth:`SpeechModel.describe` plus how the feature encoder runs long inputs."""
        d = super().describe()
        encoder = self._feature_encoder()
        reason = None if encoder is None else unsupported_reason(encoder)
        if encoder is None or reason is not None:
            mode = f"whole ({reason or 'no convolutional feature encoder'})"
        elif not self.feature_encoder_chunk_frames:
            mode = "whole (piecewise feature encoder turned off)"
        else:
            mode = (f"in pieces of {self.feature_encoder_chunk_frames} frames above that length "
                    "(same result, bounded memory)")
        d["feature_encoder"] = {"mode": mode, "chunk_frames": int(self.feature_encoder_chunk_frames or 0)}
        return d

    def _inputs_dict(self, inputs, attention_mask) -> dict:
        if isinstance(inputs, torch.Tensor):  # padded waveforms, as transformers models take them
            inputs = {"input_values": inputs}
            if attention_mask is not None:
                inputs["attention_mask"] = attention_mask
            return inputs
        return super()._inputs_dict(inputs, attention_mask)

    def _feature_encoder(self) -> Optional[nn.Module]:
        """The model's convolutional feature encoder (transformers' ``*FeatureEncoder``), if any."""
        for module in self.model.modules():
            if type(module).__name__.endswith("FeatureEncoder"):
                return module
        return None

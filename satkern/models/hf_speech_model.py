"""Transformers speech models (wav2vec2, HuBERT, WavLM, data2vec-audio, UniSpeech(-SAT), SEW,
wav2vec2-conformer) as a :class:`~satkern.models.speech_model.SpeechModel`: waveforms in, zero-padded with
a sample mask; attention frames from the convolutional feature extractor (times SEW's squeeze factor)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from . import hf as _hf
from .speech_model import SpeechModel


class HFSpeechModel(SpeechModel):
    """A transformers encoder model; ``do_normalize``: zero mean, unit variance per utterance (from the
    model folder's ``preprocessor_config.json``, else transformers' convention for its extractor)."""

    family = "hf"

    def __init__(self, model: nn.Module, name: str, random_weights: bool = False, path: Optional[str] = None):
        cfg = model.config
        super().__init__(model, name, _hf.SAMPLE_RATE, _hf.attention_stride(cfg), random_weights)
        self.do_normalize = bool(_hf.preprocessor_settings(path, cfg)["do_normalize"])

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
        """
        inputs = self._inputs_dict(inputs, attention_mask)
        encoder = self._group_norm_feature_encoder()
        if encoder is None or "attention_mask" not in inputs or inputs["input_values"].shape[0] == 1:
            return self.model(**inputs, **kwargs)
        samples = inputs["attention_mask"].sum(-1).tolist()
        batched = encoder.forward

        def per_utterance(input_values):
            frames = _hf.conv_frames(self.model.config, input_values.shape[-1])  # of the padded length
            ones = [batched(input_values[i:i + 1, :int(n)]) for i, n in enumerate(samples)]  # [1, C, T_i]
            out = ones[0].new_zeros((len(ones), ones[0].shape[1], frames))
            for i, one in enumerate(ones):
                out[i, :, :one.shape[-1]] = one[0]
            return out

        encoder.forward = per_utterance
        try:
            return self.model(**inputs, **kwargs)
        finally:
            del encoder.forward  # back to the class's forward

    def _inputs_dict(self, inputs, attention_mask) -> dict:
        if isinstance(inputs, torch.Tensor):  # padded waveforms, as transformers models take them
            inputs = {"input_values": inputs}
            if attention_mask is not None:
                inputs["attention_mask"] = attention_mask
            return inputs
        return super()._inputs_dict(inputs, attention_mask)

    def _group_norm_feature_encoder(self) -> Optional[nn.Module]:
        if getattr(self.model.config, "feat_extract_norm", None) != "group":
            return None
        for module in self.model.modules():
            if type(module).__name__.endswith("FeatureEncoder"):
                return module
        return None

"""The convolutional feature encoder of wav2vec2-style transformers models over long inputs, in pieces.

wav2vec2, HuBERT, WavLM, data2vec-audio, UniSpeech(-SAT), SEW and wav2vec2-conformer turn the
waveform into frames with a stack of unpadded 1-d convolutions (``encoder.conv_layers``: each a
``conv``, an optional norm, an activation). Run on a whole recording, every layer's output is held
at full length: HuBERT-base's first layer alone is 512 channels x N / 5 frames, 3.1 GB of float32
for 8 minutes, the second layer half that. :class:`ChunkedFeatureEncoder` computes the same output
piece by piece, holding one piece's activations at a time:

* The stack's output frame ``t`` depends on input samples ``[t S, t S + R)`` only (``S``: the
  product of the strides, ``R``: the receptive field, :class:`ConvGeometry`). Output frames
  ``[a, b)`` are therefore exactly the stack run on samples ``[a S, (b - 1) S + R)``: every layer's
  piece starts on a multiple of its own stride, so each piece's frames line up with the full run's.
  Consecutive pieces overlap by ``R - S`` samples (80 for HuBERT-base: R = 400, S = 320) and nothing
  has to be cropped.
* Layer norms over channels (``feat_extract_norm="layer"``) and activations act frame by frame.
  The one exception is the GroupNorm of the first layer (``feat_extract_norm="group"``, HuBERT-base,
  wav2vec2-base): with ``num_groups == channels`` it normalizes each channel over the *whole* time
  axis. A first pass runs the first convolution piece by piece and merges each piece's count, mean
  and sum of squared deviations per (utterance, group) in float64 (Chan et al.'s pairwise update, no
  E[x^2] - E[x]^2 cancellation); the second pass applies GroupNorm's affine map with those statistics.

The result equals ``encoder(input_values)`` (the class's own forward) up to float rounding: to
~1e-15 in float64; in float32 the first layer's statistics are more accurate than GroupNorm's own
float32 ones, a difference of order 1e-6 relative. The pieces cost about twice the first
convolution (two passes) and nothing else.

Used by :class:`~satkern.models.hf_speech_model.HFSpeechModel` in eval mode for inputs longer
than :data:`DEFAULT_CHUNK_FRAMES` output frames (training mode keeps the class's forward, which also
marks its input for gradient checkpointing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import nn

# Output frames per piece: 1024 frames are 20.48 s at HuBERT-base's stride of 320 samples (16 kHz); the
# piece's first-layer activations are then 512 channels x 65,536 frames, 128 MiB of float32.
DEFAULT_CHUNK_FRAMES = 1024


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel sizes and strides of an unpadded convolution stack."""

    kernels: Tuple[int, ...]
    strides: Tuple[int, ...]

    @property
    def stride(self) -> int:
        """``S``: input samples per output frame."""
        return int(math.prod(self.strides))

    @property
    def receptive_field(self) -> int:
        """``R``: input samples one output frame depends on, ``k_0 + sum_i (k_i - 1) prod_{j<i} s_j``."""
        r, jump = 1, 1
        for k, s in zip(self.kernels, self.strides):
            r += (k - 1) * jump
            jump *= s
        return r

    def frames(self, num_samples: int, layers: Optional[int] = None) -> int:
        """Output frames of the first ``layers`` layers (all by default) for ``num_samples`` samples."""
        n = int(num_samples)
        for k, s in list(zip(self.kernels, self.strides))[:layers]:
            n = (n - k) // s + 1 if n >= k else 0
        return n


def conv_geometry(encoder: nn.Module) -> ConvGeometry:
    convs = [layer.conv for layer in encoder.conv_layers]
    return ConvGeometry(tuple(int(c.kernel_size[0]) for c in convs), tuple(int(c.stride[0]) for c in convs))


def unsupported_reason(encoder: nn.Module) -> Optional[str]:
    """Why ``encoder`` cannot run in pieces (``None``: it can). It must be a transformers
    ``*FeatureEncoder`` whose ``conv_layers`` are unpadded, undilated ``Conv1d`` layers with a
    frame-wise norm or none, a GroupNorm only in the first layer."""
    layers = getattr(encoder, "conv_layers", None)
    if not type(encoder).__name__.endswith("FeatureEncoder") or not isinstance(layers, nn.ModuleList) or not layers:
        return f"{type(encoder).__name__} is not a transformers convolutional feature encoder"
    for i, layer in enumerate(layers):
        conv = getattr(layer, "conv", None)
        if not type(layer).__name__.endswith("ConvLayer") or not isinstance(conv, nn.Conv1d):
            return f"conv layer {i} ({type(layer).__name__}) is not a Conv1d layer"
        if conv.padding not in ((0,), 0) or conv.dilation != (1,):
            return f"conv layer {i} is padded or dilated"
        norm = getattr(layer, "layer_norm", None)
        if isinstance(norm, nn.GroupNorm):
            if i != 0:
                return f"conv layer {i} has a GroupNorm (over time) after the first layer"
        elif norm is not None and not isinstance(norm, nn.LayerNorm):
            return f"conv layer {i} has a {type(norm).__name__}"
    return None


class ChunkedFeatureEncoder:
    """``encoder(input_values)`` computed in pieces of ``chunk_frames`` output frames (module docstring).

    ``encoder``: a transformers ``*FeatureEncoder`` (:func:`unsupported_reason` says whether it fits).
    Calling it with ``input_values [B, N]`` returns ``[B, C, T]`` as the encoder does, for any batch
    (with a GroupNorm, each utterance of the padded batch is normalized over the padded length, as the
    encoder itself does).
    """

    def __init__(self, encoder: nn.Module, chunk_frames: int = DEFAULT_CHUNK_FRAMES):
        reason = unsupported_reason(encoder)
        if reason is not None:
            raise ValueError(f"ChunkedFeatureEncoder: {reason}")
        if int(chunk_frames) < 1:
            raise ValueError(f"ChunkedFeatureEncoder: chunk_frames must be >= 1; got {chunk_frames}")
        self.encoder = encoder
        self.chunk_frames = int(chunk_frames)
        self.geometry = conv_geometry(encoder)

    def applies(self, num_samples: int) -> bool:
        """Whether an input of ``num_samples`` samples is longer than one piece (else it runs whole)."""
        return self.geometry.frames(num_samples) > self.chunk_frames

    def samples_of(self, first: int, end: int, layers: Optional[int] = None) -> Tuple[int, int]:
        """Input samples ``[start, stop)`` that frames ``[first, end)`` of the first ``layers`` layers read."""
        g = self.geometry if layers is None else ConvGeometry(self.geometry.kernels[:layers],
                                                               self.geometry.strides[:layers])
        return first * g.stride, (end - 1) * g.stride + g.receptive_field

    def __call__(self, input_values: torch.Tensor) -> torch.Tensor:
        x = input_values[:, None]  # [B, 1, N]
        layers: List[nn.Module] = list(self.encoder.conv_layers)
        T = self.geometry.frames(x.shape[-1])
        if T == 0:
            return type(self.encoder).forward(self.encoder, input_values)
        first = layers[0]
        group_norm = first.layer_norm if isinstance(getattr(first, "layer_norm", None), nn.GroupNorm) else None
        stats = self._group_norm_stats(first, group_norm, x) if group_norm is not None else None
        out = None
        for a in range(0, T, self.chunk_frames):
            b = min(a + self.chunk_frames, T)
            start, stop = self.samples_of(a, b)
            piece = x[..., start:stop]
            if stats is None:
                h = first(piece)
            else:
                h = first.activation(_apply_group_norm(first.conv(piece), group_norm, *stats))
            for layer in layers[1:]:
                h = layer(h)
            if h.shape[-1] != b - a:  # the geometry says it cannot happen; a wrong result would be silent
                raise RuntimeError(f"ChunkedFeatureEncoder: piece [{a}, {b}) gave {h.shape[-1]} frames")
            if out is None:
                out = h.new_empty(h.shape[0], h.shape[1], T)
            out[..., a:b] = h
        return out

    def _group_norm_stats(self, first: nn.Module, norm: nn.GroupNorm, x: torch.Tensor
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(mean, rstd)`` ``[B, groups]`` of the first convolution's output over the whole time axis
        (biased variance, as GroupNorm), from pieces of as many first-layer frames as a second-pass
        piece holds."""
        T0 = self.geometry.frames(x.shape[-1], layers=1)
        step = self.chunk_frames * self.geometry.stride // self.geometry.strides[0]
        G = norm.num_groups
        count = mean = m2 = None
        for c in range(0, T0, step):
            d = min(c + step, T0)
            start, stop = self.samples_of(c, d, layers=1)
            y = first.conv(x[..., start:stop])  # [B, C, d - c]
            y = y.reshape(y.shape[0], G, -1).to(torch.float64)
            n_b = y.shape[-1]
            mean_b = y.mean(-1)
            m2_b = (y - mean_b[..., None]).pow(2).sum(-1)
            if count is None:
                count, mean, m2 = n_b, mean_b, m2_b
                continue
            n = count + n_b
            delta = mean_b - mean
            mean = mean + delta * (n_b / n)
            m2 = m2 + m2_b + delta.pow(2) * (count * n_b / n)
            count = n
        var = m2 / count
        return mean, torch.rsqrt(var + norm.eps)


def _apply_group_norm(y: torch.Tensor, norm: nn.GroupNorm, mean: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """GroupNorm of ``y [B, C, n]`` with given per-(utterance, group) ``mean``, ``rstd`` ``[B, G]``."""
    B, C, n = y.shape
    G = norm.num_groups
    z = (y.reshape(B, G, C // G, n) - mean.to(y.dtype)[..., None, None]) * rstd.to(y.dtype)[..., None, None]
    z = z.reshape(B, C, n)
    if norm.affine:
        z = z * norm.weight[None, :, None] + norm.bias[None, :, None]
    return z

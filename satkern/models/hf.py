"""Hugging Face speech models: built-in configs (standard sizes and tiny-* test sizes) and loading.

Configs come from transformers' config classes; only the fields that differ from a
class's defaults (the defaults are the base sizes: 12 layers, hidden 768, 12 heads, a
7-layer convolutional feature extractor of total stride 320 at 16 kHz) are written here.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

SAMPLE_RATE = 16000  # Hz: every family here consumes 16 kHz audio

# name -> (transformers config class, model class, config overrides)
_STANDARD: Dict[str, Tuple[str, str, dict]] = {
    "hubert-base": ("HubertConfig", "HubertModel", {}),
    "wav2vec2-base": ("Wav2Vec2Config", "Wav2Vec2Model", {}),
    # wav2vec2-large-lv60 layout: pre-LN ("stable layer norm") encoder, layer-normed conv features
    "wav2vec2-large": ("Wav2Vec2Config", "Wav2Vec2Model", dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)),
    "wavlm-base": ("WavLMConfig", "WavLMModel", {}),
    "data2vec-audio-base": ("Data2VecAudioConfig", "Data2VecAudioModel", {}),
    "unispeech-sat-base": ("UniSpeechSatConfig", "UniSpeechSatModel", {}),
    # asapp/sew-tiny-100k sizes; the 13-layer conv extractor of SEWConfig's defaults (stride 320)
    "sew-tiny": ("SEWConfig", "SEWModel", dict(
        hidden_size=256, num_hidden_layers=12, num_attention_heads=4, intermediate_size=1024, squeeze_factor=2)),
    "wav2vec2-conformer-base": ("Wav2Vec2ConformerConfig", "Wav2Vec2ConformerModel", dict(
        position_embeddings_type="relative")),
}

# tiny-*: 2 layers, hidden 32, 4 heads, narrow conv extractor with the standard strides (stride 320)
_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def _tiny_overrides(name: str, config_cls) -> dict:
    o = dict(_TINY)
    n_conv = len(config_cls().conv_dim)
    o["conv_dim"] = (16,) * n_conv
    if name == "sew-tiny":
        o["squeeze_factor"] = 2
    if name == "wav2vec2-large":
        o.update(do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
    if name == "wav2vec2-conformer-base":
        o.update(position_embeddings_type="relative", conv_depthwise_kernel_size=3)
    if name == "wavlm-base":
        o.update(num_buckets=32, max_bucket_distance=64)
    if name == "data2vec-audio-base":
        o.update(num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=4, conv_pos_kernel_size=5)
    return o


def names() -> List[str]:
    base = list(_STANDARD)
    return base + ["tiny-" + n for n in base]


def config_for(name: str, **overrides):
    """A transformers config for a built-in name (``tiny-`` prefix for test sizes)."""
    import transformers

    tiny = name.startswith("tiny-")
    base = name[5:] if tiny else name
    if base not in _STANDARD:
        raise KeyError(name)
    cfg_name, _, fields = _STANDARD[base]
    cfg_cls = getattr(transformers, cfg_name)
    fields = dict(_tiny_overrides(base, cfg_cls) if tiny else fields)
    fields.update(overrides)
    return cfg_cls(**fields)


def build_hf(name: str, **overrides) -> nn.Module:
    """Random-weight transformers model (the bare encoder model, eval mode) for a built-in name.

    ``attn_implementation`` may be passed among the overrides (default: transformers' choice,
    sdpa where the family supports it, else eager); the other overrides are config fields.
    """
    import transformers

    attn = overrides.pop("attn_implementation", None)
    base = name[5:] if name.startswith("tiny-") else name
    cfg = config_for(name, **overrides)
    model_cls = getattr(transformers, _STANDARD[base][1])
    model = model_cls._from_config(cfg) if attn is None else model_cls._from_config(cfg, attn_implementation=attn)
    return model.eval()


def load_hf(path: str, attn_implementation: Optional[str] = None) -> nn.Module:
    """A transformers model directory (config.json + safetensors/bin), offline."""
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    kwargs = {"local_files_only": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModel.from_pretrained(path, config=cfg, **kwargs)
    return model.eval()


def preprocessor_settings(path: Optional[str], config) -> dict:
    """``do_normalize`` / ``return_attention_mask`` from ``preprocessor_config.json`` if present;
    otherwise transformers' convention: normalize and pass a mask for layer-normed extractors."""
    layer_norm = getattr(config, "feat_extract_norm", "group") == "layer"
    settings = {"do_normalize": layer_norm, "return_attention_mask": True}
    if path:
        f = os.path.join(path, "preprocessor_config.json")
        if os.path.isfile(f):
            with open(f) as fh:
                pre = json.load(fh)
            settings["do_normalize"] = bool(pre.get("do_normalize", settings["do_normalize"]))
    return settings


def conv_frames(config, num_samples: int) -> int:
    """Frames after the convolutional feature extractor (no padding: floor((n - kernel) / stride) + 1)."""
    n = int(num_samples)
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        n = (n - kernel) // stride + 1 if n >= kernel else 0
    return max(n, 0)


def conv_stride(config) -> int:
    return int(math.prod(config.conv_stride))


def attention_stride(config) -> int:
    """Samples per attention frame: the conv stride (times SEW's squeeze factor)."""
    return conv_stride(config) * int(getattr(config, "squeeze_factor", 1) or 1)


def attention_frames(config, num_samples: torch.Tensor, padded_samples: int) -> torch.Tensor:
    """Attention frames per utterance, as the model computes them, for a batch padded to ``padded_samples``."""
    conv = torch.tensor([conv_frames(config, int(n)) for n in num_samples], dtype=torch.int64)
    squeeze = int(getattr(config, "squeeze_factor", 1) or 1)
    if squeeze == 1:
        return conv
    # SEW pools the frame mask with max_pool1d (any valid frame in a window makes it valid),
    # over floor(T_conv_padded / squeeze) windows
    windows = conv_frames(config, padded_samples) // squeeze
    return torch.clamp((conv + squeeze - 1) // squeeze, max=windows)

"""Built-in s3prl model configs (random weights), by name.

The ``*-base`` names follow s3prl's released base models (``logMelBase`` in the hub
names): 3 layers, hidden 768, 12 heads, FFN 3072, GELU, post-LN, no frame stacking,
80-dim log-mel input with per-utterance CMVN (``pretrain/tera/exp_model_config/
logMelBase-*.yaml``, ``pretrain/mockingjay/config_model*.yaml``). AudioALBERT is the
same with ``share_layer``. Mockingjay and TERA differ in pre-training only (the
alterations of the input), not in the network.

``tiny-*`` variants (2 layers, hidden 32, 4 heads) are for tests; ``tiny-mockingjay``
stacks 3 frames (``downsample_rate`` 3, as the original Mockingjay and the paper's
models did) so tests exercise strided framing.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

from .features import S3prlFeatures
from .model import S3prlConfig, S3prlTransformer

# s3prl's on-the-fly feature block of the logMel models (input part)
LOG_MEL_AUDIO = {
    "target_level": -25, "win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": 80, "n_mfcc": 13,
    "input": {"feat_type": "mel", "channel": 0, "log": True, "delta": 0, "cmvn": True},
}

_BASE = {"hidden_size": 768, "num_hidden_layers": 3, "num_attention_heads": 12, "intermediate_size": 3072,
         "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
         "initializer_range": 0.02, "layer_norm_eps": 1e-12, "share_layer": False, "pre_layer_norm": False}
_TINY = dict(_BASE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

BUILTIN_CONFIGS: Dict[str, Dict[str, Any]] = {
    "mockingjay-base": {"transformer": dict(_BASE), "audio": LOG_MEL_AUDIO},
    "tera-base": {"transformer": dict(_BASE), "audio": LOG_MEL_AUDIO},
    "audio-albert-base": {"transformer": dict(_BASE, share_layer=True), "audio": LOG_MEL_AUDIO},
    "tiny-mockingjay": {"transformer": dict(_TINY, downsample_rate=3), "audio": LOG_MEL_AUDIO},
    "tiny-tera": {"transformer": dict(_TINY), "audio": LOG_MEL_AUDIO},
    "tiny-audio-albert": {"transformer": dict(_TINY, share_layer=True), "audio": LOG_MEL_AUDIO},
}


# "tiny-" + a base name is accepted too (satkern.models names tiny variants that way)
ALIASES = {"tiny-mockingjay-base": "tiny-mockingjay", "tiny-tera-base": "tiny-tera",
           "tiny-audio-albert-base": "tiny-audio-albert"}


def s3prl_names():
    return sorted(BUILTIN_CONFIGS)


def build_s3prl(name: str, **overrides) -> S3prlTransformer:
    """A random-weight (s3prl initialization) eval-mode model from a built-in config name.

    ``overrides``: any ``transformer`` option (``num_hidden_layers=12``, ``downsample_rate=3``,
    ``pre_layer_norm=True``, ...), ``audio=`` a whole s3prl ``audio`` block, or ``audio=None``
    with ``input_dim=`` for a model on pre-extracted features.
    """
    key = ALIASES.get(name, name)
    if key not in BUILTIN_CONFIGS:
        raise ValueError(f"unknown s3prl model {name!r}; built-in names: {s3prl_names()} "
                         f"(also {sorted(ALIASES)})")
    spec = copy.deepcopy(BUILTIN_CONFIGS[key])
    audio = overrides.pop("audio", spec["audio"])
    features = S3prlFeatures.from_audio_config(audio) if audio else None
    if features is not None:
        if "input_dim" in overrides and int(overrides["input_dim"]) != features.dim:
            raise ValueError(f"build_s3prl: input_dim={overrides['input_dim']} disagrees with the "
                             f"{features.dim}-dim features of the audio config")
        overrides.setdefault("input_dim", features.dim)
    config = S3prlConfig.from_block(spec["transformer"], **overrides)
    model = S3prlTransformer(config, features=features, name=name)
    model.eval()
    model.random_weights = True
    return model

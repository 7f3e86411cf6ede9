"""Speech models satkern analyses: one-call construction and loading.

* :func:`build` ``(name, **overrides)``: a random-weight model for a built-in name:
  ``hubert-base``, ``wav2vec2-base``, ``wav2vec2-large``, ``wavlm-base``,
  ``data2vec-audio-base``, ``unispeech-sat-base``, ``sew-tiny``,
  ``wav2vec2-conformer-base`` (transformers), ``mockingjay-base``, ``tera-base``,
  ``audio-albert-base`` (s3prl format, :mod:`satkern.models.s3prl`), and ``tiny-<name>`` of
  each (2 layers, hidden 32-64) for tests.
* trained SATs shipped with satkern (:mod:`satkern.models.trained`): ``sat-mini-m3`` (and m6, m9
  where shipped), returned with their trained weights (``random_weights`` False) by both
  :func:`build` and :func:`load_model`.
* :func:`load_model` ``(spec, trust_checkpoint=False)`` -> :class:`SpeechModel`: a transformers
  model directory (offline), an s3prl checkpoint file, or a built-in name.
* :class:`SpeechModel` (:mod:`.speech_model`): the interface the jobs use; one class per family owns
  how it is fed and what it reports: :class:`HFSpeechModel` (:mod:`.hf_speech_model`) and
  :class:`~satkern.models.s3prl.S3prlSpeechModel` (:mod:`.s3prl.speech_model`).
"""
from __future__ import annotations

import os
from typing import List

from torch import nn

from . import hf as _hf
from .hf_speech_model import HFSpeechModel
from .speech_model import SpeechModel
from .trained import is_trained_name, load_trained, trained_names

S3PRL_NAMES = ("mockingjay-base", "tera-base", "audio-albert-base")


def names() -> List[str]:
    """Every built-in model name (random-weight architectures and the shipped trained models)."""
    s3 = list(S3PRL_NAMES)
    return _hf.names() + s3 + ["tiny-" + n for n in s3] + trained_names()


def _is_s3prl_name(name: str) -> bool:
    base = name[5:] if name.startswith("tiny-") else name
    return base in S3PRL_NAMES or base + "-base" in S3PRL_NAMES


def _s3prl_builtin(name: str) -> str:
    """The s3prl module's own name for a built-in ("tiny-mockingjay-base" -> "tiny-mockingjay" if so named)."""
    from .s3prl import s3prl_names

    known = set(s3prl_names())
    if name not in known and name.startswith("tiny-") and name.endswith("-base") and name[:-5] in known:
        return name[:-5]
    return name


def build(name: str, **overrides) -> nn.Module:
    """A random-weight model (eval mode) for a built-in ``name`` (see :func:`names`).

    transformers names: ``overrides`` are config fields, plus ``attn_implementation``
    (default: sdpa where the family supports it, else eager). s3prl names: passed to ``satkern.models.s3prl.build_s3prl``.
    """
    if not isinstance(name, str):
        raise TypeError(f"satkern.models.build: name must be a string; got {type(name).__name__}")
    if is_trained_name(name):
        if overrides:
            raise ValueError(f"satkern.models.build: {name!r} is a trained model; it takes no overrides "
                             f"(got {sorted(overrides)})")
        return load_trained(name)
    if _is_s3prl_name(name):
        from .s3prl import build_s3prl

        return build_s3prl(_s3prl_builtin(name), **overrides).eval()
    try:
        return _hf.build_hf(name, **overrides)
    except KeyError:
        raise ValueError(f"satkern.models.build: unknown model name {name!r}; built-in names: "
                         f"{', '.join(names())}") from None


def load_model(spec: str, *, trust_checkpoint: bool = False, s3prl_whole_sequence: bool = False) -> SpeechModel:
    """A :class:`SpeechModel` from a transformers model directory, an s3prl checkpoint, or a built-in name.

    * directory with ``config.json``: ``AutoModel.from_pretrained(local_files_only=True)``
      (never touches the network);
    * file: an s3prl checkpoint, loaded safely unless ``trust_checkpoint``
      (``satkern.models.s3prl.load_s3prl_checkpoint``);
    * a shipped trained name (``sat-mini-m3``, ...): its trained weights, ``random_weights=False``;
    * any other built-in name (:func:`names`): random weights, ``random_weights=True``.

    ``s3prl_whole_sequence``: run s3prl checkpoints on the whole input at once instead of
    splitting inputs longer than the checkpoint's ``task.sequence_length`` into chunks as
    s3prl's upstream does (the default).
    """
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        config_file = os.path.join(spec, "config.json")
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"model folder {spec!r} has no config.json (expected a transformers model folder "
                                    f"with config.json and the weights)")
        _check_json(config_file)
        try:
            model = _hf.load_hf(spec)
        except (OSError, ValueError, KeyError) as e:  # transformers: unknown model_type, missing weights, ...
            why = " ".join(str(e).split())
            raise ValueError(f"model folder {spec!r} cannot be loaded by transformers: {why}") from None
        return HFSpeechModel(model, os.path.basename(os.path.normpath(spec)), random_weights=False, path=spec)
    if os.path.isfile(spec):
        from .s3prl import load_s3prl_checkpoint
        from .s3prl.speech_model import S3prlSpeechModel

        model = load_s3prl_checkpoint(spec, trust=trust_checkpoint).eval()
        return S3prlSpeechModel(model, os.path.basename(spec), whole_sequence=s3prl_whole_sequence)
    if is_trained_name(spec) or _is_s3prl_name(spec):
        from .s3prl.speech_model import S3prlSpeechModel

        return S3prlSpeechModel(build(spec), spec, random_weights=not is_trained_name(spec),
                                whole_sequence=s3prl_whole_sequence)
    if spec in names():
        return HFSpeechModel(build(spec), spec, random_weights=True)
    raise _not_found(spec)


def _check_json(path: str) -> None:
    """A config file that is not valid JSON, as one line naming the file, line and column."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); fix the file or download the model folder again") from None


def _looks_like_hub_id(spec: str) -> bool:
    """``owner/name`` as on the Hugging Face hub: one slash, no path-like start, no file suffix."""
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec)) and not spec.endswith(
        (".ckpt", ".pt", ".pth", ".bin", ".safetensors"))


def _not_found(spec: str) -> Exception:
    """The error for a model spec that is no folder, no file and no built-in name."""
    if _looks_like_hub_id(spec):
        return FileNotFoundError(
            f"model {spec!r} does not exist here; it looks like a Hugging Face hub id, and satkern never downloads: "
            f"download it yourself (e.g. `huggingface-cli download {spec} --local-dir DIR`) and pass the folder")
    if os.sep in spec or (os.altsep and os.altsep in spec) or spec.startswith((".", "~")) or os.path.splitext(spec)[1]:
        return FileNotFoundError(f"model path {spec!r} does not exist (expected a transformers model folder or an "
                                 f"s3prl checkpoint file)")
    return ValueError(f"model {spec!r} does not exist as a path and is not a built-in name; pass a transformers "
                      f"model folder, an s3prl checkpoint file, or one of: {', '.join(names())}")


__all__ = ["build", "load_model", "SpeechModel", "HFSpeechModel", "names", "S3PRL_NAMES"]

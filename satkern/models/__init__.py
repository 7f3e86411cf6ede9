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
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from . import hf as _hf
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


@dataclass
class SpeechModel:
    """A model plus how to feed it audio.

    * ``model``: the ``nn.Module``; ``family``: ``"hf"`` or ``"s3prl"``; ``name``.
    * ``sample_rate`` (Hz); ``frame_stride``: samples per model (attention) frame, S.
    * ``random_weights``: True for built-in names.
    * :meth:`prepare` ``(waveforms) -> (inputs, frame_lengths)``: ``model(**inputs)`` runs the
      padded batch; ``frame_lengths`` int64 ``[B]`` are the attention frames per utterance
      (what ``Patch.lengths`` will report).
    * :meth:`num_frames` ``(num_samples)``: attention frames of one utterance alone.
    """

    model: nn.Module
    family: str
    name: str
    sample_rate: int
    frame_stride: int
    random_weights: bool = False
    do_normalize: bool = False
    _num_frames: Optional[Callable[[int], int]] = field(default=None, repr=False)

    def num_frames(self, num_samples: int) -> int:
        if self._num_frames is not None:
            return int(self._num_frames(int(num_samples)))
        if self.family == "hf":
            cfg = self.model.config
            n = _hf.conv_frames(cfg, num_samples)
            return n // int(getattr(cfg, "squeeze_factor", 1) or 1)
        return int(self.prepare([torch.zeros(int(num_samples))])[1][0])

    def num_chunks(self, num_samples: int) -> int:
        """Pieces an utterance of ``num_samples`` samples is run in: s3prl checkpoints split inputs
        longer than their ``task.sequence_length`` (unless ``whole_sequence``); 1 otherwise."""
        sizes = getattr(self.model, "chunk_sizes", None)
        features = getattr(self.model, "features", None)
        if sizes is None or features is None:
            return 1
        return len(sizes(features.num_frames(int(num_samples))))

    def label_weights(self, segments, num_samples: int, label_index) -> torch.Tensor:
        """Frame label weights ``[num_frames(num_samples), Y]`` of an utterance (the framing rule of
        METRICS.md, :func:`satkern.corpus.framing.frame_label_weights`), chunk by chunk for an s3prl
        input run in ``sequence_length`` chunks (each chunk's frames start at its own first sample)."""
        from ..corpus.framing import frame_label_weights

        n = int(num_samples)
        if self.num_chunks(n) <= 1:
            return frame_label_weights(segments, n, self.frame_stride, self.num_frames(n), label_index)
        hop = self.model.features.hop_length
        rows = []
        for start, _, frames in self.model.chunk_pieces(self.model.features.num_frames(n)):
            offset = start * hop  # the chunk's first sample
            shifted = [((seg.start, seg.end, seg.label) if hasattr(seg, "label") else tuple(seg)) for seg in segments]
            shifted = [(a - offset, b - offset, lab) for a, b, lab in shifted]
            rows.append(frame_label_weights(shifted, max(n - offset, 0), self.frame_stride, frames, label_index))
        return torch.cat(rows)

    def forward(self, inputs, attention_mask: Optional[torch.Tensor] = None, **kwargs):
        """``model(**inputs, **kwargs)`` for a batch from :meth:`prepare`, batched exactly as each utterance alone.

        ``inputs`` is the dict :meth:`prepare` returns; for transformers models also the padded
        waveforms ``input_values [B, N]`` with ``attention_mask`` (1 = valid sample), as
        ``model(input_values, attention_mask=mask)`` (a prefix mask: samples first, padding after).

        transformers front ends with ``feat_extract_norm="group"`` (HuBERT-base, wav2vec2-base)
        normalize their first convolution over time, so zero padding would change every shorter
        utterance's features. For those, the convolutional feature encoder runs once per
        utterance on its own samples (the rest of the model still runs batched; padded frames
        are zeroed by the encoder before they can reach a valid frame).
        """
        if isinstance(inputs, torch.Tensor):
            if self.family != "hf":
                raise TypeError(f"SpeechModel.forward: an s3prl model takes the dict from .prepare(waveforms); "
                                f"got a {type(inputs).__name__}")
            inputs = {"input_values": inputs}
            if attention_mask is not None:
                inputs["attention_mask"] = attention_mask
        elif not isinstance(inputs, dict):
            raise TypeError(f"SpeechModel.forward: expected the dict from .prepare(waveforms) (or, for transformers "
                            f"models, a tensor input_values); got {type(inputs).__name__}")
        elif attention_mask is not None:
            raise TypeError("SpeechModel.forward: attention_mask is already in the dict from .prepare(waveforms)")
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

    __call__ = forward

    def _group_norm_feature_encoder(self) -> Optional[nn.Module]:
        if self.family != "hf" or getattr(self.model.config, "feat_extract_norm", None) != "group":
            return None
        for module in self.model.modules():
            if type(module).__name__.endswith("FeatureEncoder"):
                return module
        return None

    def prepare(self, waveforms) -> Tuple[dict, torch.Tensor]:
        waves = [torch.as_tensor(w, dtype=torch.float32).flatten() for w in waveforms]
        if not waves:
            raise ValueError("SpeechModel.prepare: no waveforms")
        device = next(self.model.parameters()).device
        if self.family == "s3prl":
            feats, lengths = self.model.extract_features([w.to(device) for w in waves])
            r = int(getattr(self.model, "downsample_rate", 1) or 1)
            if r > 1:
                # Frame stacking: an utterance alone keeps floor(frames / r) stacked frames, but in a
                # padded batch s3prl would also keep its partial last group (padded with zeros). Trim
                # every utterance to whole groups so a batch gives exactly what each utterance gives alone.
                # (An utterance the model splits into sequence_length chunks is trimmed chunk by chunk
                # in its forward instead.)
                lengths = torch.as_tensor(lengths, dtype=torch.int64)
                chunked = torch.tensor([len(self.model.chunk_sizes(int(n))) > 1 for n in lengths.tolist()],
                                       dtype=torch.bool) if hasattr(self.model, "chunk_sizes") else \
                    torch.zeros(len(lengths), dtype=torch.bool)
                lengths = torch.where(chunked, lengths, lengths // r * r)
                keep = torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths.to(feats.device)[:, None]
                feats = feats * keep[..., None].to(feats.dtype)
                feats = feats[:, : int(lengths.max()) if len(lengths) else 0]
            frames = torch.as_tensor(lengths, dtype=torch.int64)
            if hasattr(self.model, "model_lengths"):  # feature frames -> model frames (frame stacking)
                frames = self.model.model_lengths(frames, feats.shape[1])
            return {"feats": feats, "lengths": lengths}, torch.as_tensor(frames, dtype=torch.int64).cpu()
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
        inputs = {"input_values": x.to(device), "attention_mask": mask.to(device)}
        return inputs, _hf.attention_frames(self.model.config, n, N)


def _hf_speech_model(model: nn.Module, name: str, random_weights: bool, path: Optional[str] = None) -> SpeechModel:
    cfg = model.config
    settings = _hf.preprocessor_settings(path, cfg)
    return SpeechModel(model=model, family="hf", name=name, sample_rate=_hf.SAMPLE_RATE,
                       frame_stride=_hf.attention_stride(cfg), random_weights=random_weights,
                       do_normalize=settings["do_normalize"])


def _s3prl_speech_model(model: nn.Module, name: str, random_weights: bool) -> SpeechModel:
    return SpeechModel(model=model, family="s3prl", name=name, sample_rate=int(model.sample_rate),
                       frame_stride=int(model.frame_stride), random_weights=random_weights,
                       _num_frames=getattr(model, "num_frames", None))


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
        return _hf_speech_model(model, os.path.basename(os.path.normpath(spec)), False, spec)
    if os.path.isfile(spec):
        from .s3prl import load_s3prl_checkpoint

        model = load_s3prl_checkpoint(spec, trust=trust_checkpoint).eval()
        model.whole_sequence = bool(s3prl_whole_sequence)
        return _s3prl_speech_model(model, os.path.basename(spec), False)
    if is_trained_name(spec):
        return _s3prl_speech_model(load_trained(spec), spec, False)
    if spec in names() or _is_s3prl_name(spec):
        model = build(spec)
        if _is_s3prl_name(spec):
            return _s3prl_speech_model(model, spec, True)
        return _hf_speech_model(model, spec, True)
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


__all__ = ["build", "load_model", "SpeechModel", "names", "S3PRL_NAMES"]

"""``SpeechModel``: the one interface the jobs use to feed a model audio and ask what it is.

One subclass per model family, each in its own file and the only place that knows its family:
:class:`~satkern.models.hf_speech_model.HFSpeechModel` (transformers) and
:class:`~satkern.models.s3prl.speech_model.S3prlSpeechModel` (Mockingjay / TERA / AudioALBERT).
Code outside those two files never branches on ``family``; it asks the model instead
(:attr:`num_layers`, :attr:`num_heads`, :meth:`num_frames`, :meth:`num_chunks`, ...).
"""
from __future__ import annotations

import abc
from typing import Optional, Tuple

import torch
from torch import nn


class SpeechModel(abc.ABC):
    """A model plus how to feed it audio.

    * ``model``: the ``nn.Module``; ``name``; ``family`` (``"hf"`` or ``"s3prl"``: for summaries and
      messages, never for branching outside the family classes).
    * ``sample_rate`` (Hz); ``frame_stride``: samples per model (attention) frame, S.
    * ``random_weights``: True for built-in architecture names.
    * :attr:`num_layers`, :attr:`num_heads`: self-attention layers and heads per layer (what
      :func:`satkern.patch` finds, without patching).
    * :meth:`prepare` ``(waveforms) -> (inputs, frame_lengths)``: ``model(inputs)`` runs the padded
      batch; ``frame_lengths`` int64 ``[B]`` are the attention frames per utterance (what
      ``Patch.lengths`` will report).
    * :meth:`num_frames` ``(num_samples)``: attention frames of one utterance alone;
      :meth:`num_chunks` ``(num_samples)``: pieces it runs in (1 unless the family chunks inputs).
    """

    family: str = ""
    #: whether ``model(inputs, head_mask=...)`` takes an ``[L, H]`` head mask (the eager gradient check)
    supports_head_mask: bool = False

    def __init__(self, model: nn.Module, name: str, sample_rate: int, frame_stride: int,
                 random_weights: bool = False):
        self.model = model
        self.name = name
        self.sample_rate = int(sample_rate)
        self.frame_stride = int(frame_stride)
        self.random_weights = bool(random_weights)

    # -- what the model is ----------------------------------------------------------
    @property
    @abc.abstractmethod
    def num_layers(self) -> int:
        """Self-attention layers (positions: a layer shared across positions counts once per position)."""

    @property
    @abc.abstractmethod
    def num_heads(self) -> int:
        """Attention heads per layer."""

    def describe(self) -> dict:
        """The model's part of every job's ``summary.json``: name, family, weights kind, framing, size."""
        return {"name": self.name, "family": self.family, "random_weights": self.random_weights,
                "sample_rate": self.sample_rate, "frame_stride": self.frame_stride,
                "layers": self.num_layers, "heads": self.num_heads}

    # -- framing ----------------------------------------------------------------------
    @abc.abstractmethod
    def num_frames(self, num_samples: int) -> int:
        """Attention frames of one utterance of ``num_samples`` samples run alone."""

    def num_chunks(self, num_samples: int) -> int:
        """Pieces an utterance of ``num_samples`` samples is run in (1: the whole utterance at once)."""
        return 1

    @property
    def chunks_long_inputs(self) -> bool:
        """Whether this model splits long inputs into pieces run on their own (s3prl ``sequence_length``)."""
        return False

    def chunking_record(self, utterances_chunked: int) -> dict:
        """Fields for a job summary's ``model`` record about chunking (``{}``: the family never chunks)."""
        return {}

    def label_weights(self, segments, num_samples: int, label_index) -> torch.Tensor:
        """Frame label weights ``[num_frames(num_samples), Y]`` of an utterance (the framing rule of
        METRICS.md, :func:`satkern.corpus.framing.frame_label_weights`)."""
        from ..corpus.framing import frame_label_weights

        n = int(num_samples)
        return frame_label_weights(segments, n, self.frame_stride, self.num_frames(n), label_index)

    # -- running it -------------------------------------------------------------------
    @abc.abstractmethod
    def prepare(self, waveforms) -> Tuple[dict, torch.Tensor]:
        """``(inputs, frame_lengths)`` of a padded batch of 1-d waveforms at :attr:`sample_rate`."""

    def forward(self, inputs, attention_mask: Optional[torch.Tensor] = None, **kwargs):
        """``model(**inputs, **kwargs)`` for the dict :meth:`prepare` returns; a padded batch gives each
        utterance what it gives alone."""
        return self.model(**self._inputs_dict(inputs, attention_mask), **kwargs)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _inputs_dict(self, inputs, attention_mask) -> dict:
        """The dict from :meth:`prepare`, checked (a family that takes other forms overrides this)."""
        if isinstance(inputs, torch.Tensor):
            raise TypeError(f"SpeechModel.forward: an {self.family} model takes the dict from .prepare(waveforms); "
                            f"got a {type(inputs).__name__}")
        if not isinstance(inputs, dict):
            raise TypeError(f"SpeechModel.forward: expected the dict from .prepare(waveforms) (or, for transformers "
                            f"models, a tensor input_values); got {type(inputs).__name__}")
        if attention_mask is not None:
            raise TypeError("SpeechModel.forward: attention_mask is already in the dict from .prepare(waveforms)")
        return inputs

    @staticmethod
    def _waveforms(waveforms) -> list:
        """1-d float32 tensors of what :meth:`prepare` was given (at least one)."""
        waves = [torch.as_tensor(w, dtype=torch.float32).flatten() for w in waveforms]
        if not waves:
            raise ValueError("SpeechModel.prepare: no waveforms")
        return waves

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- what else the checkpoint holds ---------------------------------------------------
    def pretraining_head(self, *, checkpoint=None, trust: bool = False) -> Optional[nn.Module]:
        """The pre-training (reconstruction) head stored with the model, or ``None`` when it has none."""
        return None

    def reconstruction_target(self, inputs) -> Optional[torch.Tensor]:
        """What the pre-training head reconstructs, ``[B, T, F]`` at the model frame rate, for the dict
        :meth:`prepare` returns; ``None`` for a family without a reconstruction objective."""
        return None

    # -- running part of the model ----------------------------------------------------------
    @property
    def supports_layer_cache(self) -> bool:
        """Whether :meth:`forward_cached` exists: the last hidden state from cached layer inputs."""
        return False

    def forward_cached(self, inputs, frame_lengths: torch.Tensor, first_refined: int, cache: dict) -> torch.Tensor:
        """The last hidden state, reusing and filling ``cache`` {layer: its input hidden state}; equal to
        ``self(inputs).last_hidden_state`` when the layers before ``first_refined`` are unrefined."""
        raise NotImplementedError(f"{type(self).__name__} has no layer cache")

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r}: {self.num_layers} layers x {self.num_heads} heads, "
                f"{self.sample_rate} Hz, {self.frame_stride} samples/frame"
                + (", random weights" if self.random_weights else "") + ">")

"""Frame features for segmentation: attention rows of chosen heads, hidden states, log-mel, MFCC.

* ``attention``: the rows of one head's map ``A [T_e, T_e]`` (model frames), up-sampled by the
  model's downsample rate ``R`` to ``[R T_e, R T_e]`` (:func:`satkern.segment.upsample_map`);
  only the chosen heads' maps are ever materialized (:class:`HeadMapCapture`).
* ``hidden:L``: hidden state ``L`` (0 = the input representation, ``L`` = output of layer ``L``,
  1-based, as transformers and s3prl hand them out), each row duplicated ``R`` times.
* ``logmel``: satkern's own 80-band log-mel (25 ms Hann window, 10 ms hop, HTK mel 0 Hz to
  Nyquist, natural log of power + 1e-10; the s3prl online preprocessor of
  :mod:`satkern.models.s3prl.features`, without CMVN);
* ``mfcc``: the first 13 coefficients of the orthonormal DCT-II of those log-mel frames.

Frame ``t`` of a feature set spans ``[t hop, (t + 1) hop)`` seconds: ``hop = 10 ms`` for log-mel
and MFCC; for the model's features ``frame_stride / R / sample_rate`` (10 ms for s3prl log-mel
models at any ``R``; 20 ms for wav2vec2 / HuBERT, which are not up-sampled).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..models.s3prl.features import S3prlFeatures, dct_matrix
from .boundaries import upsample_map

FEATURE_KINDS = ("attention", "hidden", "logmel", "mfcc")
LOGMEL_N_MELS = 80
LOGMEL_WIN_S = 0.025  # 25 ms analysis window
LOGMEL_HOP_S = 0.010  # 10 ms hop (160 samples at 16 kHz)
MFCC_COEFFS = 13


@dataclass(frozen=True)
class FeatureSpec:
    """One feature set: ``kind`` in :data:`FEATURE_KINDS`; ``layer`` for ``hidden``."""

    kind: str
    layer: Optional[int] = None

    @property
    def name(self) -> str:
        return f"hidden:{self.layer}" if self.kind == "hidden" else self.kind


def parse_features(text) -> List[FeatureSpec]:
    """``"attention,hidden:1,mfcc"`` (or a list of names) -> specs; unknown names raise ``ValueError``."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: List[FeatureSpec] = []
    for raw in items:
        name = str(raw).strip()
        if not name:
            continue
        if name in ("attention", "logmel", "mfcc"):
            spec = FeatureSpec(name)
        elif name.startswith("hidden:"):
            try:
                layer = int(name.split(":", 1)[1])
            except ValueError:
                layer = -1
            if layer < 0:
                raise ValueError(f"argument '--features': {name!r} needs a hidden-state index >= 0, e.g. hidden:1")
            spec = FeatureSpec("hidden", layer)
        else:
            raise ValueError(f"argument '--features': unknown feature set {name!r}; expected attention, "
                             f"hidden:L, logmel or mfcc")
        if spec not in out:
            out.append(spec)
    if not out:
        raise ValueError("argument '--features': no feature set given; expected attention, hidden:L, logmel or mfcc")
    return out


def parse_heads(text) -> Optional[List[Tuple[int, int]]]:
    """``"auto"`` -> ``None``; ``"0:1,2:3"`` -> ``[(0, 1), (2, 3)]`` (0-based layer and head)."""
    if text is None or (isinstance(text, str) and text.strip() == "auto"):
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    heads = []
    for raw in items:
        if isinstance(raw, (tuple, list)) and len(raw) == 2:
            pair = (int(raw[0]), int(raw[1]))
        else:
            parts = str(raw).strip().split(":")
            try:
                if len(parts) != 2:
                    raise ValueError
                pair = (int(parts[0]), int(parts[1]))
            except ValueError:
                raise ValueError(f"argument '--heads': expected 'auto' or a list of LAYER:HEAD (0-based), "
                                 f"e.g. 0:3,1:0; got {str(raw).strip()!r}") from None
        if pair not in heads:
            heads.append(pair)
    if not heads:
        raise ValueError("argument '--heads': expected 'auto' or a list of LAYER:HEAD (0-based)")
    return heads


def head_name(head: Tuple[int, int]) -> str:
    return f"{head[0]}:{head[1]}"


def check_heads(heads: Sequence[Tuple[int, int]], num_layers: int, num_heads: int) -> None:
    bad = [head_name(h) for h in heads if not (0 <= h[0] < num_layers and 0 <= h[1] < num_heads)]
    if bad:
        raise ValueError(f"argument '--heads': {', '.join(bad)} out of range: the model has {num_layers} layers x "
                         f"{num_heads} heads (LAYER in 0..{num_layers - 1}, HEAD in 0..{num_heads - 1})")


# ---------------------------------------------------------------------------------------------
# acoustic baselines
# ---------------------------------------------------------------------------------------------
def logmel_extractor(sample_rate: int) -> S3prlFeatures:
    """satkern's log-mel front end at ``sample_rate`` (see the module docstring)."""
    win = round(LOGMEL_WIN_S * sample_rate)
    return S3prlFeatures(kind="online", sample_rate=sample_rate, win_length=win, hop_length=round(LOGMEL_HOP_S * sample_rate),
                         n_fft=win, n_mels=LOGMEL_N_MELS, feat_type="mel", log=True, delta=0, cmvn=False)


def mfcc_from_logmel(logmel: torch.Tensor, n_mfcc: int = MFCC_COEFFS) -> torch.Tensor:
    """``[T, n_mels]`` log-mel -> ``[T, n_mfcc]`` MFCC: orthonormal DCT-II over the mel axis."""
    dct = dct_matrix(n_mfcc, logmel.shape[-1]).to(device=logmel.device, dtype=logmel.dtype)
    return logmel @ dct


# ---------------------------------------------------------------------------------------------
# attention maps of chosen heads only
# ---------------------------------------------------------------------------------------------
class HeadMapCapture:
    """Patch a model so that each forward also returns the float64 maps of the chosen heads.

    The model runs through :func:`satkern.patch` (statistics off; outputs as the model's own); an
    observer of the patch forms, in each layer that holds a chosen head, the maps of those heads only
    (:func:`satkern.attention_map` of the q, k and bias the layer receives: ``[B, h, T, T]``). After a
    forward, ``maps[(layer, head)]`` is ``[B, T, T]`` float64 (zero on padded rows and keys). Use as a
    context manager; leaving it restores the model.
    """

    def __init__(self, model, heads: Sequence[Tuple[int, int]], backend: str = "auto"):
        import satkern

        self.patch = satkern.patch(model, stats=(), backend=backend)
        self.num_layers, self.num_heads = self.patch.num_layers, self.patch.num_heads
        try:
            check_heads(heads, self.num_layers, self.num_heads)
        except ValueError:
            self.patch.remove()
            raise
        self.heads = list(heads)
        self.by_layer: Dict[int, List[int]] = {}
        for l, h in self.heads:
            self.by_layer.setdefault(l, []).append(h)
        self.maps: Dict[Tuple[int, int], torch.Tensor] = {}
        self.patch.observe(self._record)

    def _record(self, call) -> None:
        chosen = self.by_layer.get(call.layer)
        if chosen:
            A = call.attention_map(chosen)  # [B, h, T, T] float64
            for n, head in enumerate(chosen):
                self.maps[(call.layer, head)] = A[:, n]

    def reset(self) -> None:
        self.maps = {}
        self.patch.reset()

    def remove(self) -> None:
        self.patch.remove()

    def __enter__(self) -> "HeadMapCapture":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def model_upsampling(model) -> int:
    """``R``: label frames per model frame (the s3prl downsample rate; 1 for transformers models)."""
    return int(getattr(model.model, "downsample_rate", 1) or 1)


def model_hop_seconds(model) -> float:
    """Seconds per (up-sampled) model feature frame: ``frame_stride / R / sample_rate``."""
    return model.frame_stride / model_upsampling(model) / model.sample_rate


@dataclass
class UtteranceFeatures:
    """Features of one utterance: ``rows[key]`` compact frames (model rate for attention maps and
    hidden states), expanded to label frames by :meth:`frames`. ``logmel`` always (for figures)."""

    uid: str
    num_samples: int
    rows: Dict[str, torch.Tensor]
    factor: Dict[str, int]
    hop: Dict[str, float]
    kind: Dict[str, str]
    logmel: Optional[torch.Tensor] = None

    def frames(self, key: str) -> torch.Tensor:
        """Feature rows ``[T, F]`` float64 at the label frame rate."""
        x = self.rows[key]
        r = self.factor[key]
        if self.kind[key] == "attention":
            return upsample_map(x, r)
        return x.repeat_interleave(r, dim=0) if r > 1 else x

    def drop(self, keys) -> None:
        for k in list(keys):
            for d in (self.rows, self.factor, self.hop, self.kind):
                d.pop(k, None)


def attention_key(head: Tuple[int, int]) -> str:
    return f"attention {head_name(head)}"


def extract_features(model, waveform: torch.Tensor, specs: Sequence[FeatureSpec], capture: Optional[HeadMapCapture],
                     logmel_ex: S3prlFeatures, uid: str = "") -> UtteranceFeatures:
    """Every requested feature set of one utterance (one forward of the model when it needs one).

    Keys: ``"attention L:H"`` for each head in ``capture``, ``"hidden:L"``, ``"logmel"``, ``"mfcc"``.
    """
    R = model_upsampling(model)
    mhop = model_hop_seconds(model)
    device = next(model.model.parameters()).device
    rows, factor, hop, kind = {}, {}, {}, {}
    wants_model = any(s.kind in ("attention", "hidden") for s in specs)
    logmel = logmel_ex.extract_one(waveform.to(device))  # [T_label, n_mels] float32
    if wants_model:
        hidden_layers = [s.layer for s in specs if s.kind == "hidden"]
        inputs, frames = model.prepare([waveform])
        n = int(frames[0])
        if n <= 0:
            raise ValueError(f"too short for the model ({len(waveform)} samples give 0 frames)")
        if capture is not None:
            capture.reset()
        with torch.inference_mode():
            out = model.forward(inputs, output_hidden_states=bool(hidden_layers))
        if capture is not None and any(s.kind == "attention" for s in specs):
            for head in capture.heads:
                A = capture.maps[head][0, :n, :n]
                key = attention_key(head)
                rows[key], factor[key], hop[key], kind[key] = A, R, mhop, "attention"
        if hidden_layers:
            states = out.hidden_states
            for layer in hidden_layers:
                if layer >= len(states):
                    raise ValueError(f"argument '--features': hidden:{layer} out of range: the model hands out "
                                     f"hidden states 0..{len(states) - 1}")
                key = f"hidden:{layer}"
                rows[key] = states[layer][0, :n].to(torch.float64)
                factor[key], hop[key], kind[key] = R, mhop, "hidden"
    for s in specs:
        if s.kind in ("logmel", "mfcc"):
            x = logmel.to(torch.float64)
            if s.kind == "mfcc":
                x = mfcc_from_logmel(x)
            rows[s.kind], factor[s.kind], hop[s.kind], kind[s.kind] = x, 1, logmel_ex.hop_length / logmel_ex.sample_rate, s.kind
    return UtteranceFeatures(uid, len(waveform), rows, factor, hop, kind, logmel=logmel.cpu())


__all__ = ["FEATURE_KINDS", "FeatureSpec", "parse_features", "parse_heads", "head_name", "check_heads",
           "logmel_extractor", "mfcc_from_logmel", "HeadMapCapture", "model_upsampling", "model_hop_seconds",
           "UtteranceFeatures", "attention_key", "extract_features"]

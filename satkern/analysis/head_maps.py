"""Every head's map of a few utterances, for the head explorer (``satkern analyze --head-maps N``).

Where ``--maps K`` (:mod:`.maps`) keeps a few chosen heads at full resolution for the report's
static figures, ``--head-maps N`` keeps **every layer x head** of ``N`` utterances, small enough to
ship inside an HTML page:

* **pooled** (long utterances): frames are grouped into bins of ``factor = ceil(T / max_bins)``
  consecutive frames (``max_bins`` = :data:`MAX_BINS` = 256 by default; the last bin may be
  shorter), and the stored value of (query bin ``i``, key bin ``j``) is the **mean** weight over the
  bin's frames, ``mean_{t in i, s in j} A[t, s]``. Rows still sum to 1 when each key bin's value is
  counted once per frame of the bin. Utterances of at most ``max_bins`` frames are not pooled
  (``factor`` 1: the stored map is the map);
* **quantized**: each pooled row ``a`` is stored as ``uint8`` ``q = round(255 * a / max(a))`` with
  its ``float32`` row maximum; read back as ``q * max(a) / 255``, so every weight is off by at most
  ``max(a) / 510`` (<= 1/510 ~ 0.00196 since weights are <= 1). The write measures this error on
  every map against the float64 pooled map (``quant_max_abs_error``) and, for pooled utterances,
  how far a single frame's weight lies from its bin's mean (``pool_max_abs_deviation``, the
  resolution the pooling gives up); both are printed and stored.

The maps are formed by an observer of :func:`satkern.patch` (:meth:`LayerCall.attention_map
<satkern.patching.LayerCall.attention_map>`, float64, one head at a time, the map the statistics
describe), and pooled as they come: a chunked s3prl forward adds each chunk's block at its offset
(the utterance's block-diagonal map). The same forward gives the utterance's G, V, D, W per head.

``head_maps.npz`` (``np.savez_compressed``, written atomically; ``version`` = 1):

* ``model_name``, ``model_spec``, ``weights_checksum``, ``sample_rate``, ``frame_stride``,
  ``frame_rate_hz``, ``layers``, ``heads``, ``max_bins``, ``logmel_hop_s``, ``n_mels``;
* ``category`` ``[L, H]`` (the corpus categories of ``heads.csv``), ``corpus_G`` ... ``corpus_W``
  ``[L, H]`` (corpus means);
* ``utt_ids`` ``[U]``, ``utt_duration_s``, ``utt_frames`` (model frames ``T``), ``utt_factor``
  (frames per bin), ``quant_max_abs_error``, ``pool_max_abs_deviation`` ``[U]``;
* per utterance ``j``: ``maps_{j}`` uint8 ``[L, H, P, P]`` (``P = ceil(T / factor)``; rows: query
  bins, columns: key bins), ``rowmax_{j}`` float32 ``[L, H, P]``, ``metrics_{j}`` float32
  ``[4, L, H]`` (this utterance's G, V, D, W), ``logmel_{j}`` float16 ``[T_mel, n_mels]``,
  ``phone_start_{j}``, ``phone_end_{j}`` (seconds), ``phone_label_{j}`` (empty without alignments).

Bin ``i`` covers model frames ``[i * factor, min((i + 1) * factor, T))``, i.e. seconds
``[i * factor, min((i + 1) * factor, T)) / frame_rate_hz``. :func:`load_head_maps` reads the file
back as numpy arrays (:class:`HeadMaps`).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .output import atomic_write_bytes

HEAD_MAPS_VERSION = 1
HEAD_MAPS_FILE = "head_maps.npz"
METRIC_NAMES = ("G", "V", "D", "W")
# bins per axis at most: 256^2 uint8 = 64 KiB per head, 9.4 MB for a 12 x 12 model before compression
MAX_BINS = 256
# utterances longer than this are not captured: every head's map is formed in float64, one head at a
# time (12000^2 * 8 bytes = 1.15 GB); pooling happens after the map exists
MAX_CAPTURE_FRAMES = 12000
QUANT_LEVELS = 255  # uint8: 0 .. 255


def pool_factor(frames: int, max_bins: int = MAX_BINS) -> int:
    """Frames per bin: 1 up to ``max_bins`` frames, else ``ceil(frames / max_bins)``."""
    if max_bins < 1:
        raise ValueError(f"max_bins must be at least 1; got {max_bins}")
    return max(1, math.ceil(frames / max_bins))


def num_bins(frames: int, factor: int) -> int:
    return max(1, math.ceil(frames / factor))


def quantize_rows(A: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(q, row_max)``: ``q`` uint8 ``round(255 * A / row_max)`` (0 where a row is all 0), ``row_max``
    float32 ``A.max(-1)``. :func:`dequantize_rows` inverts it to within ``row_max / 510``."""
    A = np.asarray(A, dtype=np.float64)
    row_max = A.max(axis=-1) if A.shape[-1] else np.zeros(A.shape[:-1])
    row_max = np.maximum(row_max, 0.0).astype(np.float32)
    scale = np.where(row_max > 0, QUANT_LEVELS / np.where(row_max > 0, row_max.astype(np.float64), 1.0), 0.0)
    q = np.clip(np.rint(A * scale[..., None]), 0, QUANT_LEVELS).astype(np.uint8)
    return q, row_max


def dequantize_rows(q: np.ndarray, row_max: np.ndarray) -> np.ndarray:
    """float32 weights ``q * row_max / 255`` (the inverse of :func:`quantize_rows`)."""
    return q.astype(np.float32) * (row_max.astype(np.float32)[..., None] / np.float32(QUANT_LEVELS))


def pool_map(A: torch.Tensor, factor: int, bins: int, offset: int = 0, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bin sums ``[..., bins, bins]`` of maps ``A`` ``[..., n, n]`` whose frame 0 is the utterance's frame
    ``offset``: ``out[i, j] += sum of A[t, s]`` over frames ``t`` in bin ``i`` and ``s`` in bin ``j``
    (divide by the bins' frame counts for the mean, :func:`bin_counts`)."""
    n = A.shape[-1]
    idx = (torch.arange(n, device=A.device) + offset) // factor
    lead = A.shape[:-2]
    if out is None:
        out = torch.zeros(*lead, bins, bins, dtype=A.dtype, device=A.device)
    keys = torch.zeros(*lead, n, bins, dtype=A.dtype, device=A.device).index_add_(-1, idx, A)  # [..., n, bins]
    out.index_add_(-2, idx, keys)
    return out


def bin_counts(frames: int, factor: int) -> np.ndarray:
    """Frames in each bin ``[P]`` (the last bin may be shorter)."""
    P = num_bins(frames, factor)
    starts = np.arange(P) * factor
    return np.minimum(starts + factor, frames) - starts


class HeadMapCapture:
    """Patch observer: every head's map of a one-utterance forward, pooled to bins as it comes
    (``sums[layer]`` float64 ``[H, P, P]``); chunked forwards add each chunk at its offset. With
    ``factor`` > 1 it also keeps each bin's largest and smallest single-frame weight, for
    :meth:`pool_max_abs_deviation` (not for chunked forwards, whose maps have 0 blocks off the chunks)."""

    def __init__(self, frames: int, factor: int):
        self.frames = frames
        self.factor = factor
        self.bins = num_bins(frames, factor)
        self.sums: Dict[int, torch.Tensor] = {}
        self.hi: Dict[int, torch.Tensor] = {}
        self.lo: Dict[int, torch.Tensor] = {}
        self.chunked = False
        self.seen: Dict[int, int] = {}  # layer -> frames covered (a check that every chunk arrived)

    def __call__(self, call) -> None:
        B, H, T, _ = call.q.shape
        if call.chunk is not None:
            self.chunked = True
            rows = [(b, int(call.chunk.offsets[b]), int(call.chunk.frames[b])) for b in range(B)
                    if int(call.chunk.utterances[b]) == 0]
        else:
            rows = [(0, 0, int(T if call.lengths is None else call.lengths[0]))]
        P = self.bins
        acc = self.sums.setdefault(call.layer, torch.zeros(H, P, P, dtype=torch.float64))
        track = self.factor > 1
        if track:
            hi = self.hi.setdefault(call.layer, torch.full((H, P, P), -math.inf, dtype=torch.float64))
            lo = self.lo.setdefault(call.layer, torch.full((H, P, P), math.inf, dtype=torch.float64))
        for b, off, n in rows:
            for hd in range(H):  # one head at a time: one float64 [n, n] map in memory
                A = call.attention_map([hd], for_statistics=True)[b, 0, :n, :n].cpu()
                pool_map(A, self.factor, P, offset=off, out=acc[hd])
                if track and call.chunk is None:  # whole utterance from frame 0: bins are blocks of the map
                    pad = P * self.factor - n
                    f = self.factor
                    hi[hd] = torch.nn.functional.pad(A, (0, pad, 0, pad), value=-math.inf).reshape(
                        P, f, P, f).amax(dim=(1, 3))
                    lo[hd] = torch.nn.functional.pad(A, (0, pad, 0, pad), value=math.inf).reshape(
                        P, f, P, f).amin(dim=(1, 3))
            self.seen[call.layer] = self.seen.get(call.layer, 0) + n

    def pooled(self, layers: int) -> np.ndarray:
        """Mean weight per bin, float64 ``[L, H, P, P]``."""
        missing = [l for l in range(layers) if self.seen.get(l) != self.frames]
        if missing:
            raise RuntimeError(f"head maps: layers {missing} did not cover the utterance's {self.frames} frames "
                               f"({ {l: self.seen.get(l, 0) for l in missing} })")
        c = bin_counts(self.frames, self.factor).astype(np.float64)
        S = torch.stack([self.sums[l] for l in range(layers)]).numpy()
        return S / (c[:, None] * c[None, :])

    def pool_max_abs_deviation(self, pooled: np.ndarray) -> float:
        """max over heads and frame pairs of |A[t, s] - mean of its bin| (0 unpooled, NaN for a chunked forward)."""
        if self.factor == 1:
            return 0.0
        if self.chunked:
            return float("nan")
        L = pooled.shape[0]
        hi = torch.stack([self.hi[l] for l in range(L)]).numpy()
        lo = torch.stack([self.lo[l] for l in range(L)]).numpy()
        return float(max(np.max(hi - pooled), np.max(pooled - lo)))


@dataclass
class CapturedUtterance:
    """One utterance's pooled float64 maps ``[L, H, P, P]`` and metrics (``{"G": [L, H], ...}``)."""

    frames: int
    factor: int
    pooled: np.ndarray
    metrics: Dict[str, np.ndarray]
    pool_max_abs_deviation: float


def capture_head_maps(model, waveform: torch.Tensor, *, max_bins: int = MAX_BINS, backend: str = "auto",
                      max_frames: int = MAX_CAPTURE_FRAMES) -> CapturedUtterance:
    """Every head's pooled map of one utterance (a batch of one) and its G, V, D, W, through
    :func:`satkern.patch` with a :class:`HeadMapCapture` observer (module docstring)."""
    import satkern

    frames = int(model.num_frames(len(waveform)))
    if frames < 1:
        raise ValueError(f"head maps: the waveform ({len(waveform)} samples) gives no model frame")
    if frames > max_frames:
        raise ValueError(f"head maps: {frames} model frames is more than {max_frames} (every head's map is formed "
                         f"in float64 before pooling); use a shorter utterance")
    cap = HeadMapCapture(frames, pool_factor(frames, max_bins))
    with satkern.patch(model, stats=satkern.STAT_NAMES, backend=backend, observers=[cap]) as h:
        inputs, _ = model.prepare([waveform])
        with torch.inference_mode():
            model.forward(inputs)
        m = h.metrics
        metrics = {k: getattr(m, k)[0].double().cpu().numpy() for k in METRIC_NAMES}
        layers = h.num_layers
    pooled = cap.pooled(layers)
    return CapturedUtterance(frames=frames, factor=cap.factor, pooled=pooled, metrics=metrics,
                             pool_max_abs_deviation=cap.pool_max_abs_deviation(pooled))


@dataclass
class HeadMapsUtterance:
    """One utterance of a :class:`HeadMaps`: the stored (quantized) maps and what is needed to place them."""

    uid: str
    duration_s: float
    frames: int  # model frames T
    factor: int  # frames per bin
    maps_q: np.ndarray  # uint8 [L, H, P, P]
    row_max: np.ndarray  # float32 [L, H, P]
    metrics: Dict[str, np.ndarray]  # "G", "V", "D", "W" -> float32 [L, H] (this utterance)
    logmel: np.ndarray  # float16 [T_mel, n_mels]
    phone_start: np.ndarray  # seconds
    phone_end: np.ndarray
    phone_label: np.ndarray  # str
    quant_max_abs_error: float = float("nan")
    pool_max_abs_deviation: float = float("nan")

    @property
    def bins(self) -> int:
        return int(self.maps_q.shape[-1])

    def maps(self) -> np.ndarray:
        """The maps as float32 weights ``[L, H, P, P]`` (mean weight per bin; rows: queries)."""
        return dequantize_rows(self.maps_q, self.row_max)

    def head(self, layer: int, head: int) -> np.ndarray:
        """One head's map, float32 ``[P, P]``."""
        return dequantize_rows(self.maps_q[layer, head], self.row_max[layer, head])

    def bin_edges_s(self, frame_rate_hz: float) -> np.ndarray:
        """``[P + 1]`` bin edges in seconds (bin ``i``: ``[edges[i], edges[i + 1])``)."""
        e = np.minimum(np.arange(self.bins + 1) * self.factor, self.frames)
        return e / float(frame_rate_hz)


@dataclass
class HeadMaps:
    """What ``head_maps.npz`` holds (module docstring), as numpy arrays."""

    model_name: str
    model_spec: str
    weights_checksum: str
    sample_rate: int
    frame_stride: int
    frame_rate_hz: float
    layers: int
    heads: int
    max_bins: int
    logmel_hop_s: float
    category: np.ndarray  # str [L, H]
    corpus: Dict[str, np.ndarray]  # "G" ... "W" -> [L, H] (NaN where unknown)
    utterances: List[HeadMapsUtterance] = field(default_factory=list)

    def to_npz_bytes(self) -> bytes:
        U = self.utterances
        arrays = {
            "version": np.array(HEAD_MAPS_VERSION), "model_name": np.array(self.model_name),
            "model_spec": np.array(self.model_spec), "weights_checksum": np.array(self.weights_checksum),
            "sample_rate": np.array(int(self.sample_rate)), "frame_stride": np.array(int(self.frame_stride)),
            "frame_rate_hz": np.array(float(self.frame_rate_hz)), "layers": np.array(int(self.layers)),
            "heads": np.array(int(self.heads)), "max_bins": np.array(int(self.max_bins)),
            "logmel_hop_s": np.array(float(self.logmel_hop_s)), "n_mels": np.array(int(U[0].logmel.shape[1]) if U else 0),
            "category": np.asarray(self.category, dtype=str),
            **{f"corpus_{k}": np.asarray(self.corpus[k], dtype=np.float64) for k in METRIC_NAMES},
            "utt_ids": np.array([u.uid for u in U], dtype=str),
            "utt_duration_s": np.array([u.duration_s for u in U], dtype=np.float64),
            "utt_frames": np.array([u.frames for u in U], dtype=np.int64),
            "utt_factor": np.array([u.factor for u in U], dtype=np.int64),
            "quant_max_abs_error": np.array([u.quant_max_abs_error for u in U], dtype=np.float64),
            "pool_max_abs_deviation": np.array([u.pool_max_abs_deviation for u in U], dtype=np.float64),
        }
        for j, u in enumerate(U):
            arrays[f"maps_{j}"] = u.maps_q
            arrays[f"rowmax_{j}"] = u.row_max.astype(np.float32)
            arrays[f"metrics_{j}"] = np.stack([u.metrics[k] for k in METRIC_NAMES]).astype(np.float32)
            arrays[f"logmel_{j}"] = u.logmel.astype(np.float16)
            arrays[f"phone_start_{j}"] = np.asarray(u.phone_start, dtype=np.float64)
            arrays[f"phone_end_{j}"] = np.asarray(u.phone_end, dtype=np.float64)
            arrays[f"phone_label_{j}"] = np.asarray(u.phone_label, dtype=str)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()


REQUIRED_KEYS = ("version", "model_name", "weights_checksum", "frame_rate_hz", "layers", "heads", "category",
                 "utt_ids", "utt_duration_s", "utt_frames", "utt_factor", "logmel_hop_s")


def load_head_maps(path) -> HeadMaps:
    """Read ``head_maps.npz`` (a file, or a run folder holding one) back as :class:`HeadMaps`.

    ``hm.utterances[j].maps()`` is float32 ``[L, H, P, P]`` (mean weight per bin, rows: query
    bins), ``.head(l, h)`` one map, ``.bin_edges_s(hm.frame_rate_hz)`` the bins' times,
    ``.metrics["G"]`` ``[L, H]``, ``.phone_start`` / ``.phone_end`` / ``.phone_label`` the phones,
    ``.logmel`` the display spectrogram (hop ``hm.logmel_hop_s``). A missing or corrupt file is a
    ``ValueError`` naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / HEAD_MAPS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no such file (make it with `satkern analyze ... --head-maps N`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # BadZipFile, ValueError, OSError, EOFError: all mean "corrupt"
        raise ValueError(f"{path}: corrupt {path.name} ({type(e).__name__}: {e})") from None
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: corrupt {path.name}: arrays {missing} missing")
    if int(data["version"]) != HEAD_MAPS_VERSION:
        raise ValueError(f"{path}: version {int(data['version'])}; this satkern reads version {HEAD_MAPS_VERSION}")
    L, H = int(data["layers"]), int(data["heads"])
    hm = HeadMaps(model_name=str(data["model_name"]), model_spec=str(data.get("model_spec", "")),
                  weights_checksum=str(data["weights_checksum"]), sample_rate=int(data.get("sample_rate", 0)),
                  frame_stride=int(data.get("frame_stride", 0)), frame_rate_hz=float(data["frame_rate_hz"]),
                  layers=L, heads=H, max_bins=int(data.get("max_bins", MAX_BINS)),
                  logmel_hop_s=float(data["logmel_hop_s"]), category=data["category"].astype(str),
                  corpus={k: data.get(f"corpus_{k}", np.full((L, H), np.nan)) for k in METRIC_NAMES})
    for j, uid in enumerate(data["utt_ids"]):
        keys = [f"maps_{j}", f"rowmax_{j}", f"metrics_{j}", f"logmel_{j}"]
        gone = [k for k in keys if k not in data]
        if gone:
            raise ValueError(f"{path}: corrupt {path.name}: arrays {gone} missing")
        T, f = int(data["utt_frames"][j]), int(data["utt_factor"][j])
        P = num_bins(T, f)
        q, rm, met = data[f"maps_{j}"], data[f"rowmax_{j}"], data[f"metrics_{j}"]
        if q.shape != (L, H, P, P) or q.dtype != np.uint8 or rm.shape != (L, H, P) or met.shape != (4, L, H):
            raise ValueError(f"{path}: corrupt {path.name}: utterance {j} has maps {q.shape} {q.dtype}, rowmax "
                             f"{rm.shape}, metrics {met.shape}; expected ({L}, {H}, {P}, {P}) uint8, ({L}, {H}, {P}), "
                             f"(4, {L}, {H})")
        hm.utterances.append(HeadMapsUtterance(
            uid=str(uid), duration_s=float(data["utt_duration_s"][j]), frames=T, factor=f, maps_q=q, row_max=rm,
            metrics={k: met[i] for i, k in enumerate(METRIC_NAMES)}, logmel=data[f"logmel_{j}"],
            phone_start=data.get(f"phone_start_{j}", np.zeros(0)), phone_end=data.get(f"phone_end_{j}", np.zeros(0)),
            phone_label=data.get(f"phone_label_{j}", np.zeros(0, dtype=str)).astype(str),
            quant_max_abs_error=float(data["quant_max_abs_error"][j]) if "quant_max_abs_error" in data else float("nan"),
            pool_max_abs_deviation=(float(data["pool_max_abs_deviation"][j]) if "pool_max_abs_deviation" in data
                                    else float("nan"))))
    return hm


def stored_utterance(uid: str, captured: CapturedUtterance, waveform: torch.Tensor, sample_rate: int,
                     phones: Sequence[Tuple[float, float, str]] = ()) -> HeadMapsUtterance:
    """Quantize a captured utterance, measure the quantization error, add its log-mel and phones
    (``(start_s, end_s, label)``)."""
    from .maps import display_logmel

    q, rm = quantize_rows(captured.pooled)
    err = float(np.abs(dequantize_rows(q, rm).astype(np.float64) - captured.pooled).max()) if q.size else 0.0
    mel, _ = display_logmel(waveform, sample_rate)
    return HeadMapsUtterance(
        uid=uid, duration_s=len(waveform) / float(sample_rate), frames=captured.frames, factor=captured.factor,
        maps_q=q, row_max=rm, metrics={k: v.astype(np.float32) for k, v in captured.metrics.items()},
        logmel=mel.astype(np.float16), phone_start=np.array([p[0] for p in phones], dtype=np.float64),
        phone_end=np.array([p[1] for p in phones], dtype=np.float64),
        phone_label=np.array([str(p[2]) for p in phones], dtype=str), quant_max_abs_error=err,
        pool_max_abs_deviation=captured.pool_max_abs_deviation)


def choose_head_map_utterances(utterances: Sequence, n: int) -> List:
    """``n`` utterances spread over the corpus by duration: sorted by (duration, id), the ones at
    the quantiles ``(i + 0.5) / n`` (``n`` = 1: the median-length utterance)."""
    items = sorted(utterances, key=lambda u: (u.duration, u.uid))
    if n >= len(items):
        return items
    return [items[int((i + 0.5) * len(items) / n)] for i in range(n)]


def empty_head_maps(model, *, model_spec: str, weights_checksum: str, category, corpus: Dict[str, np.ndarray],
                    max_bins: int = MAX_BINS) -> HeadMaps:
    from .maps import LOGMEL_HOP_S

    L, H = np.asarray(category).shape
    rate = int(model.sample_rate)
    return HeadMaps(model_name=str(model.name), model_spec=str(model_spec), weights_checksum=str(weights_checksum),
                    sample_rate=rate, frame_stride=int(model.frame_stride), frame_rate_hz=rate / float(model.frame_stride),
                    layers=L, heads=H, max_bins=max_bins, logmel_hop_s=LOGMEL_HOP_S,
                    category=np.asarray(category, dtype=str), corpus=corpus)


def describe_errors(hm: HeadMaps) -> str:
    """One line: how the maps were reduced and the error that introduced (printed by the writers)."""
    q = [u.quant_max_abs_error for u in hm.utterances]
    pooled = [u for u in hm.utterances if u.factor > 1]
    s = (f"every map stored as uint8 per row scaled by the row max: max abs error "
         f"{max(q) if q else 0.0:.2e} against the float64 map (bound: row max / 510)")
    if pooled:
        s += (f"; {len(pooled)} utterance(s) longer than {hm.max_bins} frames averaged over bins of up to "
              f"{max(u.factor for u in pooled)} frames (a single frame's weight lies up to "
              f"{max(u.pool_max_abs_deviation for u in pooled):.3g} from its bin's mean)")
    return s


def write_head_maps(path, *, model, utterances: Sequence, n: int = 0, uids: Sequence[str] = (), heads: dict,
                    categories: Optional[Sequence[str]], model_spec: str, weights_checksum: str, with_alignments: bool,
                    tier: Optional[str] = None, label_map: Optional[Callable] = None, allow_resample: bool = True,
                    backend: str = "auto", max_bins: int = MAX_BINS, log: Callable[[str], None] = print) -> dict:
    """Choose ``n`` utterances (:func:`choose_head_map_utterances`) and/or the ones named in ``uids``,
    capture every head's map of each, and write ``head_maps.npz``; returns a summary dict.

    ``utterances``: the job's utterance list; ``heads``: the job's corpus table (``{"G": [L, H], ...}``);
    ``categories``: flat, layer-major (``heads.csv`` order)."""
    from .maps import load_display

    by_id = {u.uid: u for u in utterances}
    unknown = [u for u in uids if u not in by_id]
    if unknown:
        raise ValueError(f"satkern analyze: --head-maps-for names utterances the run did not analyze: {unknown}")
    rate = int(model.sample_rate)

    def frames_of(u):
        return model.num_frames(int(round(u.num_samples * rate / u.sample_rate))) if u.sample_rate else 0

    too_long = [u.uid for u in utterances if u.uid in uids and frames_of(u) > MAX_CAPTURE_FRAMES]
    if too_long:
        raise ValueError(f"satkern analyze: --head-maps-for: {too_long} are longer than {MAX_CAPTURE_FRAMES} model "
                         f"frames (every head's map is formed in float64 before pooling)")
    candidates = [u for u in utterances if 0 < frames_of(u) <= MAX_CAPTURE_FRAMES]
    chosen = [by_id[u] for u in uids] + [u for u in choose_head_map_utterances(candidates, n) if u.uid not in uids]
    L, H = np.asarray(heads["G"]).shape
    cat = (np.asarray(list(categories), dtype=str).reshape(L, H) if categories is not None
           else np.full((L, H), "", dtype=str))
    corpus = {k: (np.asarray(heads[k], dtype=np.float64) if heads.get(k) is not None else np.full((L, H), np.nan))
              for k in METRIC_NAMES}
    hm = empty_head_maps(model, model_spec=model_spec, weights_checksum=weights_checksum, category=cat, corpus=corpus,
                         max_bins=max_bins)
    skipped = []
    for u in chosen:
        try:
            wav, segs = load_display(u, rate, with_alignments=with_alignments, tier=tier, label_map=label_map,
                                     allow_resample=allow_resample)
        except ValueError as e:
            skipped.append({"utterance": u.uid, "reason": str(e)})
            continue
        cap = capture_head_maps(model, wav, max_bins=max_bins, backend=backend)
        phones = [(s.start / rate, s.end / rate, s.label) for s in segs]
        hm.utterances.append(stored_utterance(u.uid, cap, wav, rate, phones))
    atomic_write_bytes(path, hm.to_npz_bytes())
    line = describe_errors(hm)
    log(f"satkern analyze: every head's map ({L} layers x {H} heads) of {len(hm.utterances)} utterances in {path}; {line}")
    return {"file": HEAD_MAPS_FILE, "utterances": [u.uid for u in hm.utterances], "max_bins": max_bins,
            "factors": [u.factor for u in hm.utterances],
            "quant_max_abs_error": max((u.quant_max_abs_error for u in hm.utterances), default=0.0),
            "pool_max_abs_deviation": max((u.pool_max_abs_deviation for u in hm.utterances), default=0.0),
            "how": line, "skipped": skipped}

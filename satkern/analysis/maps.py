"""Attention maps for the report (``satkern analyze --maps K``): a few heads, a few utterances.

After the corpus metrics are known, :func:`write_maps` picks, for each of the three categories
(global by G, vertical by V, diagonal by D; METRICS.md sec. 4), the ``K`` heads with the largest
corpus value of that metric, and for each such head two utterances:

* ``average``: the utterance whose length-free value of the metric for that head is closest to the
  head's mean length-free value over the corpus (the head's typical behaviour);
* ``extreme``: the utterance with the largest length-free value (the head at its most global /
  vertical / diagonal for its length).

Length-free values (:func:`satkern.metrics.length_free`: G / log T, 1 + V / log T, 1 + D / |D of
uniform attention|) compare utterances of different lengths T: G and -V of uniform attention grow as
log T, so by the raw value the most global utterance would simply be the longest one and the most
vertical the shortest.

Ties go to the lower (layer, head), then the smaller utterance id. Only those utterances are run
again, one at a time, through the model patched by :func:`satkern.patch`; for the chosen heads the
map (:func:`satkern.attention_map`: softmax(q k^T * scale + bias) over the valid frames, with the
layer's span and pruned heads) is formed in float64 from the very q, k (and bias) the patched layer
receives, by an observer of the patch, so the map is the one the metrics of that run describe
(tests hold the map's G, V, D, W to the job's per-utterance values). No other map is formed.

``maps.npz`` (``np.savez_compressed``, written atomically) holds, with ``version`` = 1:

* ``model_name``, ``model_spec``, ``weights_checksum`` (the job's fingerprint of the weights),
  ``sample_rate``, ``frame_stride``, ``frame_rate_hz`` (model frames per second);
* ``logmel_hop_s``, ``n_mels``; per utterance ``j``: ``logmel_{j}`` float16 ``[T_mel, n_mels]``
  (natural log of 80 HTK mel energies, 25 ms Hann windows every 10 ms), ``phone_start_{j}``,
  ``phone_end_{j}`` (seconds), ``phone_label_{j}`` (empty when the corpus has no alignments);
* ``utt_ids`` ``[U]``, ``utt_duration_s`` ``[U]``;
* one row per shown map: ``map_role`` ("global" | "vertical" | "diagonal"), ``map_metric``
  ("G" | "V" | "D"), ``map_pick`` ("average" | "extreme"), ``map_layer``, ``map_head``,
  ``map_utt`` (index into ``utt_ids``), ``map_value`` (the utterance's value of the metric),
  ``map_corpus_value`` (the head's corpus mean), ``map_key`` (the array holding the map);
* the maps: ``map_L{layer}_H{head}_U{j}`` float16 ``[T, T]`` (rows: queries, columns: keys, model
  frames), each stored once however many rows name it.
"""
from __future__ import annotations

import io
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..metrics import length_free
from .output import atomic_write_bytes

MAPS_VERSION = 1
ROLES = (("global", "G"), ("vertical", "V"), ("diagonal", "D"))
PICKS = ("average", "extreme")
# a shown utterance's map is at most this many frames on a side (2000^2 float16 = 8 MB before
# compression); longer utterances are not candidates for the pictures
MAX_MAP_FRAMES = 2000
# the display spectrogram: 25 ms windows every 10 ms, 80 mel bands (the paper's Fig. 1 input)
LOGMEL_WIN_S = 0.025
LOGMEL_HOP_S = 0.010
LOGMEL_N_MELS = 80
LOGMEL_EPS = 1e-10  # added to the mel energies before the log (as s3prl's preprocessor)


def display_logmel(wav: torch.Tensor, sample_rate: int) -> Tuple[np.ndarray, float]:
    """Log-mel spectrogram ``[T_mel, 80]`` (float32) and its hop in seconds, for pictures.

    Frame ``t`` is centred on sample ``t * hop`` (centred STFT frames, reflect padding).
    """
    from ..models.s3prl.features import melscale_fbanks, power_spectrogram

    win = int(round(LOGMEL_WIN_S * sample_rate))
    hop = int(round(LOGMEL_HOP_S * sample_rate))
    n_fft = 1 << (win - 1).bit_length()  # next power of two at or above the window
    x = wav.to(torch.float64).flatten()
    if x.numel() <= n_fft // 2:  # too short for reflect padding: pad with zeros first
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.numel()))
    spec = power_spectrogram(x, n_fft=n_fft, hop_length=hop, win_length=win)  # [T, n_fft/2+1]
    fb = melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, LOGMEL_N_MELS, sample_rate)
    mel = torch.log(spec @ fb + LOGMEL_EPS)
    return mel.to(torch.float32).numpy(), hop / sample_rate


def load_display(u, rate: int, *, with_alignments: bool, tier: Optional[str] = None,
                 label_map: Optional[Callable] = None, allow_resample: bool = True):
    """``(waveform, segments)`` of one corpus utterance for pictures: the audio at the model's ``rate``
    and its phone segments (model-rate samples; ``[]`` without an alignment). Raises
    ``AudioError`` / ``AlignmentError`` (both ``ValueError``) for a file that cannot be read."""
    from ..corpus.alignments import read_alignment
    from ..corpus.audio import load_audio

    wav = load_audio(u.audio, rate, allow_resample=allow_resample)
    segs = (read_alignment(u.alignment, file_rate=u.sample_rate, target_rate=rate, tier=tier, label_map=label_map)
            if with_alignments and u.alignment else [])
    return wav, segs


def choose_heads(heads: Dict[str, np.ndarray], k: int) -> List[Tuple[str, str, int, int, float]]:
    """``(role, metric, layer, head, corpus value)`` of the ``k`` largest heads per metric G, V, D.

    ``heads[m]`` are ``[L, H]`` corpus means; NaN heads are never chosen; ties by (layer, head).
    """
    out = []
    for role, metric in ROLES:
        x = heads.get(metric)
        if x is None:
            continue
        x = np.asarray(x, dtype=np.float64)
        L, H = x.shape
        flat = [(-x[l, h], l, h) for l in range(L) for h in range(H) if not np.isnan(x[l, h])]
        for negv, l, h in sorted(flat)[:k]:
            out.append((role, metric, l, h, -negv))
    return out


def choose_utterances(values: Dict[str, float], corpus_value: float, *, metric: Optional[str] = None,
                      frames: Optional[Dict[str, int]] = None) -> Dict[str, Tuple[str, float]]:
    """``{"average": (uid, value), "extreme": (uid, value)}`` from one head's per-utterance values
    (NaN left out); ties go to the smaller utterance id. Empty if no utterance has a value.

    With ``metric`` and ``frames`` (utterance -> model frames T) the choice is by length-free value
    (:func:`satkern.metrics.length_free`) and ``corpus_value`` is the head's mean length-free value;
    the returned values stay the raw ones. Without them, by the raw values."""
    items = sorted((u, float(v)) for u, v in values.items() if not np.isnan(v))
    if metric is not None and frames is not None:
        key = {u: float(length_free(metric, v, frames[u])) for u, v in items}
        items = [(u, v) for u, v in items if not np.isnan(key[u])]
    else:
        key = {u: v for u, v in items}
    if not items:
        return {}
    average = min(items, key=lambda uv: (abs(key[uv[0]] - corpus_value), uv[0]))
    extreme = min(items, key=lambda uv: (-key[uv[0]], uv[0]))
    return {"average": average, "extreme": extreme}


def capture_maps(model, waveform: torch.Tensor, wanted: Dict[int, Sequence[int]], *,
                 backend: str = "auto") -> Dict[Tuple[int, int], np.ndarray]:
    """Maps ``{(layer, head): float64 [T, T]}`` of one utterance (a batch of one) for the heads in
    ``wanted`` (``{layer: [heads]}``), from the q, k, bias each patched layer receives: an observer
    of the patched model forms them with :func:`satkern.attention_map` (the map the statistics
    describe), for those heads only."""
    import satkern

    maps: Dict[Tuple[int, int], np.ndarray] = {}

    def record(call) -> None:
        heads = sorted(wanted.get(call.layer, ()))
        if heads:
            n = int(call.q.shape[2] if call.lengths is None else call.lengths[0])
            A = call.attention_map(heads, for_statistics=True)  # [1, h, T, T] float64
            for i, hd in enumerate(heads):
                maps[(call.layer, hd)] = A[0, i, :n, :n].cpu().numpy()

    with satkern.patch(model, stats=(), backend=backend, observers=[record]):
        inputs, _ = model.prepare([waveform])
        with torch.inference_mode():
            model.forward(inputs)
    return maps


def write_maps(path, *, model, utterances: Sequence, per_utterance, heads: Dict[str, np.ndarray], k: int,
               model_spec: str, weights_checksum: str, with_alignments: bool, tier: Optional[str] = None,
               label_map: Optional[Callable] = None, allow_resample: bool = True, backend: str = "auto",
               log: Callable[[str], None] = print) -> dict:
    """Choose, materialize and store the maps (module docstring); returns a summary dict.

    ``utterances``: the job's :class:`~satkern.corpus.readers.Utterance` list; ``per_utterance``:
    the job's per-utterance table (pandas, columns ``utterance, layer, head, G, V, D, W``).
    """
    from ..corpus.alignments import AlignmentError
    from ..corpus.audio import AudioError

    if k < 1:
        raise ValueError(f"satkern analyze: --maps must be at least 1; got {k}")
    rate = int(model.sample_rate)
    by_id = {u.uid: u for u in utterances}
    frames = {u.uid: model.num_frames(int(round(u.num_samples * rate / u.sample_rate))) if u.sample_rate else 0
              for u in utterances}
    table = per_utterance[per_utterance["utterance"].map(lambda x: 0 < frames.get(x, 0) <= MAX_MAP_FRAMES)]

    rows = []  # (role, metric, pick, layer, head, uid, value, corpus value)
    for role, metric, l, hd, corpus_value in choose_heads(heads, k):
        sel = table[(table["layer"] == l) & (table["head"] == hd)]
        mine = per_utterance[(per_utterance["layer"] == l) & (per_utterance["head"] == hd)]
        free = length_free(metric, mine[metric].to_numpy(dtype=float),
                           mine["utterance"].map(lambda x: frames.get(x, 0)).to_numpy(dtype=float))
        free_mean = float(np.nanmean(free)) if np.isfinite(free).any() else float("nan")
        picks = choose_utterances(dict(zip(sel["utterance"], sel[metric])), free_mean, metric=metric, frames=frames)
        for pick in PICKS:
            if pick in picks:
                uid, value = picks[pick]
                rows.append((role, metric, pick, l, hd, uid, value, corpus_value))
    uids = sorted({r[5] for r in rows})
    wanted_by_utt: Dict[str, Dict[int, set]] = {u: {} for u in uids}
    for r in rows:
        wanted_by_utt[r[5]].setdefault(r[3], set()).add(r[4])

    arrays: Dict[str, np.ndarray] = {}
    kept_uids: List[str] = []
    durations: List[float] = []
    skipped = []
    for uid in uids:
        u = by_id[uid]
        try:
            wav, segs = load_display(u, rate, with_alignments=with_alignments, tier=tier, label_map=label_map,
                                     allow_resample=allow_resample)
        except (AudioError, AlignmentError) as e:
            skipped.append({"utterance": uid, "reason": str(e)})
            continue
        j = len(kept_uids)
        maps = capture_maps(model, wav, {l: sorted(hs) for l, hs in wanted_by_utt[uid].items()}, backend=backend)
        for (l, hd), a in maps.items():
            arrays[f"map_L{l}_H{hd}_U{j}"] = a.astype(np.float16)
        mel, hop_s = display_logmel(wav, rate)
        arrays[f"logmel_{j}"] = mel.astype(np.float16)
        arrays[f"phone_start_{j}"] = np.array([s.start / rate for s in segs], dtype=np.float64)
        arrays[f"phone_end_{j}"] = np.array([s.end / rate for s in segs], dtype=np.float64)
        arrays[f"phone_label_{j}"] = np.array([s.label for s in segs], dtype=str)
        kept_uids.append(uid)
        durations.append(len(wav) / rate)
    index = {uid: j for j, uid in enumerate(kept_uids)}
    rows = [r for r in rows if r[5] in index]
    meta = {
        "version": np.array(MAPS_VERSION),
        "model_name": np.array(str(model.name)), "model_spec": np.array(str(model_spec)),
        "weights_checksum": np.array(str(weights_checksum)),
        "sample_rate": np.array(rate), "frame_stride": np.array(int(model.frame_stride)),
        "frame_rate_hz": np.array(rate / float(model.frame_stride)),
        "logmel_hop_s": np.array(LOGMEL_HOP_S), "n_mels": np.array(LOGMEL_N_MELS),
        "utt_ids": np.array(kept_uids, dtype=str), "utt_duration_s": np.array(durations, dtype=np.float64),
        "map_role": np.array([r[0] for r in rows], dtype=str), "map_metric": np.array([r[1] for r in rows], dtype=str),
        "map_pick": np.array([r[2] for r in rows], dtype=str),
        "map_layer": np.array([r[3] for r in rows], dtype=np.int64), "map_head": np.array([r[4] for r in rows], dtype=np.int64),
        "map_utt": np.array([index[r[5]] for r in rows], dtype=np.int64),
        "map_value": np.array([r[6] for r in rows], dtype=np.float64),
        "map_corpus_value": np.array([r[7] for r in rows], dtype=np.float64),
        "map_key": np.array([f"map_L{r[3]}_H{r[4]}_U{index[r[5]]}" for r in rows], dtype=str),
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **meta, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    log(f"satkern analyze: {len(rows)} attention maps of {len({(r[3], r[4]) for r in rows})} heads over "
        f"{len(kept_uids)} utterances in {path}")
    return {"file": "maps.npz", "heads_per_category": k, "maps": len(rows), "utterances": kept_uids,
            "skipped": skipped}

"""The head explorer: every layer x head of an utterance, interactive, in the report and in notebooks.

:func:`explorer_div` turns a :class:`~satkern.analysis.head_maps.HeadMaps` (``head_maps.npz``, from
``satkern analyze --head-maps N``, or :func:`satkern.show`'s own capture) into one self-contained
``<div class="sk-explorer">``: its data is a JSON block in the div, the maps zlib-compressed uint8
(per row, scaled by the row max, as stored) in base64, which the script inflates with the browser's
``DecompressionStream`` and draws on canvases (no SVG or DOM element per cell). The script and style
are the files in ``assets/`` (``explorer.js``, ``explorer.css``), read here and inlined at build
time, so a page needs nothing but itself and the report's Content-Security-Policy (no request of
any kind) stays as it is.

* :func:`section` -- the report's "Head explorer" section (a hook in :mod:`.html`);
* :func:`page` -- the explorer alone as a whole page (``satkern.show`` puts it in an iframe).

Colours: the large map and the thumbnails use viridis of ``(weight / map max) ** 0.5``
(:data:`satkern.report.figures.MAP_GAMMA`, as the report's static maps), the spectrograms magma of
the log-mel quantized to 256 levels between its minimum and maximum.
"""
from __future__ import annotations

import base64
import html as _html
import itertools
import json
import math
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..analysis.head_maps import HEAD_MAPS_FILE, METRIC_NAMES, HeadMaps, load_head_maps

ASSETS = Path(__file__).resolve().parent / "assets"
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")
MAKES = "satkern analyze --model MODEL --corpus CORPUS --out DIR --head-maps 2"
_ids = itertools.count()


@lru_cache(maxsize=None)
def assets() -> tuple:
    """``(css, js)`` of the explorer, read from ``assets/``."""
    return ((ASSETS / "explorer.css").read_text(encoding="utf-8"), (ASSETS / "explorer.js").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _lut(name: str) -> str:
    """A matplotlib colormap as 256 RGB triples, base64."""
    from matplotlib import colormaps

    rgb = (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8)
    return base64.b64encode(rgb.tobytes()).decode("ascii")


def lut_rgb(name: str) -> np.ndarray:
    """``[256, 3]`` uint8: the colours the explorer draws with (tests compare pixels against it)."""
    return np.frombuffer(base64.b64decode(_lut(name)), dtype=np.uint8).reshape(256, 3)


def _b64(a: np.ndarray, compress: bool = False) -> str:
    raw = np.ascontiguousarray(a).tobytes()
    return base64.b64encode(zlib.compress(raw, 6) if compress else raw).decode("ascii")


def _num(x) -> Optional[float]:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def payload(hm: HeadMaps, utterances: Optional[Sequence[int]] = None) -> dict:
    """The JSON the script reads (module docstring); ``utterances``: indices into ``hm.utterances``."""
    from .figures import MAP_GAMMA

    idx = range(len(hm.utterances)) if utterances is None else utterances
    utts = []
    for j in idx:
        u = hm.utterances[j]
        mel = np.asarray(u.logmel, dtype=np.float32)
        finite = mel[np.isfinite(mel)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        mq = np.clip(np.rint((np.nan_to_num(mel, nan=lo) - lo) / max(hi - lo, 1e-12) * 255), 0, 255).astype(np.uint8)
        utts.append({
            "id": u.uid, "duration": float(u.duration_s), "frames": int(u.frames), "factor": int(u.factor),
            "bins": int(u.bins), "qerr": _num(u.quant_max_abs_error) or 0.0,
            "metrics": {k: [_num(x) for x in np.asarray(u.metrics[k]).reshape(-1)] for k in METRIC_NAMES},
            "maps": _b64(np.asarray(u.maps_q, dtype=np.uint8), compress=True),
            "rowmax": _b64(np.asarray(u.row_max, dtype="<f4")),
            "mel": {"data": _b64(mq, compress=True), "rows": int(mq.shape[0]), "cols": int(mq.shape[1]), "lo": lo, "hi": hi},
            "phones": [[float(s), float(e), str(l)] for s, e, l in zip(u.phone_start, u.phone_end, u.phone_label)],
        })
    corpus = None
    if hm.corpus and not all(np.isnan(np.asarray(hm.corpus[k], dtype=float)).all() for k in METRIC_NAMES):
        corpus = {k: [_num(x) for x in np.asarray(hm.corpus[k], dtype=float).reshape(-1)] for k in METRIC_NAMES}
    return {"model": hm.model_name, "layers": int(hm.layers), "heads": int(hm.heads),
            "frameRate": float(hm.frame_rate_hz), "hop": float(hm.logmel_hop_s), "gamma": float(MAP_GAMMA),
            "category": [str(c) for c in np.asarray(hm.category).reshape(-1)], "corpus": corpus,
            "lut": {"map": _lut("viridis"), "mel": _lut("magma")}, "utts": utts}


def _json_for_script(obj) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</``, no ``<!--``)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def explorer_div(hm: HeadMaps, utterances: Optional[Sequence[int]] = None, element_id: Optional[str] = None) -> str:
    """The explorer's ``<div>`` with its data (no script or style: :func:`assets` / :func:`page`)."""
    if not hm.utterances:
        raise ValueError("head explorer: no utterance with maps")
    eid = element_id or f"sk-explorer-{next(_ids)}"
    return (f'<div class="sk-explorer" id="{_html.escape(eid)}" tabindex="0" data-ready="0">'
            f'<script type="application/json" class="sk-explorer-data">{_json_for_script(payload(hm, utterances))}</script>'
            '<noscript>The head explorer needs JavaScript.</noscript></div>')


def explorer_block(hm: HeadMaps, utterances: Optional[Sequence[int]] = None) -> str:
    """The div with the style and script inlined after it (one block for any page)."""
    css, js = assets()
    return f"<style>{css}</style>{explorer_div(hm, utterances)}<script>{js}</script>"


def page(hm: HeadMaps, title: str = "satkern head explorer", utterances: Optional[Sequence[int]] = None) -> str:
    """A whole offline page holding only the explorer, with the report's Content-Security-Policy."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{_html.escape(title)}</title></head><body style=\"margin:8px\">"
            f"<h3 style=\"font-family:sans-serif;margin:4px 0\">{_html.escape(title)}</h3>"
            f"{explorer_block(hm, utterances)}</body></html>\n")


def describe(hm: HeadMaps) -> str:
    """What the stored maps are, in a sentence for the page."""
    pooled = [u for u in hm.utterances if u.factor > 1]
    errs = [u.quant_max_abs_error for u in hm.utterances if not math.isnan(u.quant_max_abs_error)]
    s = (f"Every head of {hm.model_name} ({hm.layers} layers x {hm.heads} heads) on {len(hm.utterances)} "
         f"utterance(s). Maps are stored uint8 per row scaled by the row maximum (largest error against the "
         f"float64 map: {max(errs) if errs else 0:.1e})")
    if pooled:
        s += (f"; utterances longer than {hm.max_bins} frames are averaged over bins of up to "
              f"{max(u.factor for u in pooled)} frames")
    return s + ". Thumbnails are framed by the head's corpus category and labelled with this utterance's G, V, D, W."


def section(data) -> str:
    """The report's "Head explorer" section body (``data``: :class:`satkern.report.load.ReportData`)."""
    from .load import RunFolderError

    a = data.analyze
    if a is None or not (a.path / HEAD_MAPS_FILE).is_file():
        return (f'<p class="missing">The head explorer (every head\'s map of a few utterances, head_maps.npz) is '
                f'not in the given runs: make it with <code>{_html.escape(MAKES)}</code>.</p>')
    try:
        hm = load_head_maps(a.path / HEAD_MAPS_FILE)
    except ValueError as e:
        raise RunFolderError(str(e)) from None
    model = a.summary.get("model") or {}
    if isinstance(model, dict) and (model.get("name") not in (None, hm.model_name) or
                                    model.get("weights_checksum") not in (None, hm.weights_checksum)):
        raise RunFolderError(f"{a.path / HEAD_MAPS_FILE}: maps of model {hm.model_name!r} (weights "
                             f"{hm.weights_checksum}) but the run in {a.path} analyzed {model.get('name')!r} (weights "
                             f"{model.get('weights_checksum')}); rerun `satkern analyze --head-maps N` with that model")
    if (hm.layers, hm.heads) != (int(a.heads["layer"].max()) + 1, int(a.heads["head"].max()) + 1):
        raise RunFolderError(f"{a.path / HEAD_MAPS_FILE}: {hm.layers} layers x {hm.heads} heads, but heads.csv has "
                             f"another shape: the maps come from another model")
    if not hm.utterances:
        return '<p class="missing">head_maps.npz holds no utterance (every chosen file was skipped).</p>'
    return (f"<p>{_html.escape(describe(hm))}</p>{explorer_block(hm)}"
            f'<p class="src">from <code>{_html.escape(str(a.path / HEAD_MAPS_FILE))}</code>; load it with '
            f"<code>satkern.analysis.load_head_maps</code>.</p>")

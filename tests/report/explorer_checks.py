"""Drive the head explorer in headless Chromium like a user and compare what it shows with the data.

:func:`check_explorer` returns a list of failures (empty: the explorer works): a real click on a
thumbnail must put that head in the large map (its pixels are the colours of that head's stored
weights), hovering a known cell must show that cell's query and key times, phones and weight, a click
must plot that query's row, the arrow keys must move between heads and layers, and switching the
utterance must redraw from that utterance's data. :func:`synthetic_head_maps` makes small head maps
with phones (one utterance pooled) in the exact format ``satkern analyze --head-maps`` writes.
"""
import json
import math

import numpy as np

from satkern.analysis.head_maps import (HeadMaps, HeadMapsUtterance, bin_counts, num_bins, pool_factor,
                                        quantize_rows)
from satkern.report.explorer import lut_rgb
from satkern.report.figures import MAP_GAMMA

PHONES = ["sil", "aa", "b", "k", "iy", "s"]


def _maps(rng, L, H, P):
    """Row-stochastic maps [L, H, P, P], each head its own structure (diagonal bands of different widths,
    vertical stripes, blocks, noise)."""
    i = np.arange(P)
    out = np.empty((L, H, P, P))
    for l in range(L):
        for h in range(H):
            kind = (l * H + h) % 4
            if kind == 0:
                s = -np.abs(i[:, None] - i[None, :]) / (0.7 + h + l)
            elif kind == 1:
                s = np.tile(rng.normal(0, 2.5, P), (P, 1))
            elif kind == 2:
                blk = i // max(2, P // 6)
                s = np.where(blk[:, None] == blk[None, :], 2.0, 0.0) + rng.normal(0, 0.3, (P, P))
            else:
                s = rng.normal(0, 1.0, (P, P))
            a = np.exp(s - s.max(-1, keepdims=True))
            out[l, h] = a / a.sum(-1, keepdims=True)
    return out


def synthetic_head_maps(model: dict, L: int, H: int, frames=(40, 300), max_bins: int = 64, seed: int = 0,
                        categories=None) -> HeadMaps:
    rng = np.random.default_rng(seed)
    fr = model["sample_rate"] / model["frame_stride"]
    cats = np.array(categories if categories is not None else
                    [["global", "vertical", "diagonal"][(l * H + h) % 3] for l in range(L) for h in range(H)]).reshape(L, H)
    hm = HeadMaps(model_name=model["name"], model_spec=model["spec"], weights_checksum=model["weights_checksum"],
                  sample_rate=model["sample_rate"], frame_stride=model["frame_stride"], frame_rate_hz=fr, layers=L,
                  heads=H, max_bins=max_bins, logmel_hop_s=0.01, category=cats,
                  corpus={k: rng.normal(size=(L, H)) for k in "GVDW"})
    for j, T in enumerate(frames):
        f = pool_factor(T, max_bins)
        P = num_bins(T, f)
        A = _maps(rng, L, H, P)
        q, rm = quantize_rows(A)
        dur = T / fr
        edges = np.sort(np.concatenate([[0.0, dur], rng.uniform(0.05 * dur, 0.95 * dur, 5 + 3 * j)]))
        labels = [PHONES[(k + j) % len(PHONES)] for k in range(len(edges) - 1)]
        hm.utterances.append(HeadMapsUtterance(
            uid=f"spk{j + 1}/utt{j + 1}", duration_s=dur, frames=T, factor=f, maps_q=q, row_max=rm,
            metrics={k: rng.normal(size=(L, H)).astype(np.float32) for k in "GVDW"},
            logmel=rng.normal(-5, 2, (int(math.ceil(dur / 0.01)) + 1, 80)).astype(np.float16),
            phone_start=edges[:-1], phone_end=edges[1:], phone_label=np.array(labels),
            quant_max_abs_error=float(np.abs(q * (rm[..., None] / 255.0) - A).max())))
    return hm


def expected_rgb(u: HeadMapsUtterance, l: int, h: int, qb: int, kb: int) -> list:
    """The LUT indices the explorer may draw cell (qb, kb) of head (l, h) with (JS rounding: +-1)."""
    rm = u.row_max[l, h].astype(np.float64)
    mx = rm.max()
    w = u.maps_q[l, h, qb, kb] * rm[qb] / 255.0
    idx = int(math.floor(255 * min(1.0, w / mx) ** MAP_GAMMA + 0.5)) if mx > 0 else 0
    return [i for i in (idx - 1, idx, idx + 1) if 0 <= i <= 255]


def phone_at(u: HeadMapsUtterance, t: float) -> str:
    for s, e, lab in zip(u.phone_start, u.phone_end, u.phone_label):
        if s <= t < e:
            return str(lab)
    return ""


def sample_bins(P: int, n: int = 6):
    pts = np.unique(np.linspace(0, P - 1, n).round().astype(int))
    return [(int(a), int(b)) for a in pts for b in pts]


class _Dom:
    """JavaScript expressions for the explorer's elements, in the page or inside its first iframe."""

    def __init__(self, page, in_iframe: bool):
        self.page = page
        self.doc = "document.querySelector('iframe').contentDocument" if in_iframe else "document"
        self.frame_offset = (f"(() => {{ const r = document.querySelector('iframe').getBoundingClientRect(); "
                             f"return [r.left, r.top]; }})()" if in_iframe else None)

    def q(self, sel: str) -> str:
        return f"{self.doc}.querySelector('.sk-explorer {sel}')" if sel else f"{self.doc}.querySelector('.sk-explorer')"

    def eval(self, expr: str):
        return self.page.evaluate(expr)

    def center(self, el_expr: str, fx: float = 0.5, fy: float = 0.5):
        """Viewport coordinates of a point of an element (scrolled into view first)."""
        r = self.eval(f"(() => {{ const e = {el_expr}; e.scrollIntoView({{block: 'center', inline: 'center'}}); "
                      f"const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }})()")
        ox, oy = self.eval(self.frame_offset) if self.frame_offset else (0.0, 0.0)
        return ox + r[0] + fx * r[2], oy + r[1] + fy * r[3]

    def dataset(self, sel: str) -> dict:
        return self.eval(f"Object.assign({{}}, {self.q(sel)}.dataset)")

    def pixels(self, points):
        js = json.dumps(points)
        return self.eval(f"(() => {{ const c = {self.q('canvas.skx-map')}.getContext('2d'); "
                         f"return {js}.map(p => Array.from(c.getImageData(p[1], p[0], 1, 1).data.slice(0, 3))); }})()")


def _map_matches(dom, u, l, h, lut) -> list:
    """Cells of the large map whose colour is not head (l, h)'s of utterance u."""
    pts = sample_bins(u.bins)
    got = dom.pixels(pts)
    bad = []
    for (qb, kb), rgb in zip(pts, got):
        if not any(list(lut[i]) == list(rgb) for i in expected_rgb(u, l, h, qb, kb)):
            bad.append((qb, kb, rgb))
    return bad


def check_explorer(page, hm: HeadMaps, *, in_iframe: bool = False, timeout: float = 60.0) -> list:
    """Failures seen while using the explorer (see the module docstring); [] when it works."""
    fails = []
    dom = _Dom(page, in_iframe)
    lut = lut_rgb("viridis")
    page.wait_for(f"(() => {{ const d = {dom.doc}; const e = d && d.querySelector('.sk-explorer'); "
                  f"return e && e.dataset.ready === '1'; }})()", timeout=timeout)
    L, H = hm.layers, hm.heads
    if dom.eval(f"{dom.doc}.querySelectorAll('.sk-explorer .skx-cell canvas').length") != L * H:
        fails.append("thumbnails: not one per layer x head")
    u0 = hm.utterances[0]
    cats = dom.eval(f"Array.from({dom.doc}.querySelectorAll('.sk-explorer .skx-cell')).map(c => c.className)")
    if [c.split()[1] for c in cats] != [f"skx-{c}" for c in np.asarray(hm.category).reshape(-1)]:
        fails.append(f"thumbnail frames do not follow the categories: {cats[:4]}")
    lab = dom.eval(f"{dom.q('.skx-cell:nth-child(2) .skx-lab')}.textContent")
    if not (lab.startswith("L0 H1") and f"G {u0.metrics['G'][0, 1]:.2f}" in lab and f"W {u0.metrics['W'][0, 1]:.2f}" in lab):
        fails.append(f"thumbnail label of L0 H1 does not show its G, V, D, W: {lab!r}")

    # 1. a real click on the thumbnail of the last layer's last head
    tl, th = L - 1, H - 1
    x, y = dom.center(dom.q(f'.skx-cell[data-layer="{tl}"][data-head="{th}"]'))
    page.click(x, y)
    d = dom.dataset("canvas.skx-map")
    if (d.get("layer"), d.get("head")) != (str(tl), str(th)):
        fails.append(f"thumbnail click: the large map shows layer {d.get('layer')} head {d.get('head')}, not {tl} {th}")
    bad = _map_matches(dom, u0, tl, th, lut)
    if bad:
        fails.append(f"thumbnail click: {len(bad)} cells of the large map are not layer {tl} head {th}'s: {bad[:3]}")

    # 2. hover a known cell: times, phones and weight from the data
    P = u0.bins
    qb, kb = P // 3, (2 * P) // 3
    x, y = dom.center(dom.q("canvas.skx-over"), (kb + 0.5) / P, (qb + 0.5) / P)
    page.move(x, y)
    tip = dom.eval(f"(() => {{ const t = {dom.q('.skx-tip')}; return {{hidden: t.hidden, text: t.textContent, "
                   f"d: Object.assign({{}}, t.dataset)}}; }})()")
    fr = hm.frame_rate_hz
    e = np.minimum(np.arange(P + 1) * u0.factor, u0.frames) / fr
    want = {"qbin": qb, "kbin": kb, "qs": e[qb], "qe": e[qb + 1], "ks": e[kb], "ke": e[kb + 1],
            "qphone": phone_at(u0, (e[qb] + e[qb + 1]) / 2), "kphone": phone_at(u0, (e[kb] + e[kb + 1]) / 2),
            "weight": float(u0.maps_q[tl, th, qb, kb]) * float(u0.row_max[tl, th, qb]) / 255.0}
    if tip["hidden"]:
        fails.append("hover: no tooltip")
    else:
        got = tip["d"]
        for k, v in want.items():
            ok = (got.get(k) == v) if isinstance(v, str) else (k in got and math.isclose(float(got[k]), v, rel_tol=1e-6,
                                                                                            abs_tol=1e-9))
            if not ok:
                fails.append(f"hover: {k} is {got.get(k)!r}, the data says {v!r}")
        for text in (f"query {want['qs']:.3f}", f"key {want['ks']:.3f}", want["qphone"], want["kphone"]):
            if text and text not in tip["text"]:
                fails.append(f"hover: the tooltip text {tip['text']!r} does not show {text!r}")

    # 3. click that cell: the row of that query
    page.click(x, y)
    row = dom.dataset("canvas.skx-row")
    text = dom.eval(f"{dom.q('.skx-rowlab')}.textContent")
    if row.get("queryBin") != str(qb) or f"query {want['qs']:.3f}" not in text:
        fails.append(f"row click: row plot of query bin {row.get('queryBin')!r} ({text!r}), expected {qb}")

    # 4. keyboard: left -> previous head, up -> previous layer
    page.key("ArrowLeft")
    page.key("ArrowUp")
    d = dom.dataset("canvas.skx-map")
    kl, kh = max(0, tl - 1), max(0, th - 1)
    if (d.get("layer"), d.get("head")) != (str(kl), str(kh)):
        fails.append(f"keys: after left and up the map shows layer {d.get('layer')} head {d.get('head')}, not {kl} {kh}")
    elif _map_matches(dom, u0, kl, kh, lut):
        fails.append(f"keys: the map's pixels are not layer {kl} head {kh}'s")

    # 5. switch utterance
    if len(hm.utterances) > 1:
        dom.eval(f"(() => {{ const s = {dom.q('select.skx-utt')}; s.value = '1'; "
                 f"s.dispatchEvent(new Event('change')); }})()")
        page.wait_for(f"{dom.q('')}.dataset.ready === '1' && {dom.q('')}.dataset.utt === '1'", timeout=timeout)
        u1 = hm.utterances[1]
        if _map_matches(dom, u1, kl, kh, lut):
            fails.append("switch utterance: the large map is not the second utterance's")
        title = dom.eval(f"{dom.q('.skx-title')}.textContent")
        if u1.uid not in title:
            fails.append(f"switch utterance: the title {title!r} does not name {u1.uid}")
        lab = dom.eval(f"{dom.q('.skx-cell:nth-child(2) .skx-lab')}.textContent")
        if f"G {u1.metrics['G'][0, 1]:.2f}" not in lab:
            fails.append(f"switch utterance: thumbnail labels not redrawn ({lab!r})")
    return fails

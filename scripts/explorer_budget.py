"""The head explorer's budget: a 60 s utterance through a 12 x 12 model must open and respond within a
second in headless Chromium. Builds head maps of that size (structured row-stochastic maps, pooled to
256 bins and quantized exactly as ``satkern analyze --head-maps`` stores them; no model runs), writes
the explorer page, opens it and prints: the page size, the time from navigation to the first drawn
utterance (``data-ready-ms``, the page's own clock), and how long a thumbnail click, a hover and an
utterance switch take: ``*_handler_ms`` the event handler itself, the others until the next frame is
drawn (each timed in the page with ``performance.now()``).

    python scripts/explorer_budget.py [--seconds 60] [--layers 12] [--heads 12] [--out /tmp/explorer.html]
    python scripts/explorer_budget.py --head-maps RUN/head_maps.npz   # a real analyze run's maps instead

Timings depend on the machine and its load; say which machine and load when quoting them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from satkern.analysis.head_maps import HeadMaps, HeadMapsUtterance, num_bins, pool_factor, quantize_rows
from satkern.report.browser import find_chromium, open_page
from satkern.report.explorer import page

FRAME_RATE = 50.0  # wav2vec2 / HuBERT frames per second (20 ms)


def synthetic(seconds: float, L: int, H: int, utterances: int = 2, seed: int = 0) -> HeadMaps:
    rng = np.random.default_rng(seed)
    hm = HeadMaps(model_name="synthetic-12x12", model_spec="synthetic", weights_checksum="-", sample_rate=16000,
                  frame_stride=320, frame_rate_hz=FRAME_RATE, layers=L, heads=H, max_bins=256, logmel_hop_s=0.01,
                  category=np.array([["global", "vertical", "diagonal"][(l + h) % 3] for l in range(L) for h in range(H)]
                                    ).reshape(L, H), corpus={k: rng.normal(size=(L, H)) for k in "GVDW"})
    for j in range(utterances):
        T = int(seconds * FRAME_RATE) - 7 * j
        f = pool_factor(T)
        P = num_bins(T, f)
        i = np.arange(P)
        maps = np.empty((L, H, P, P), dtype=np.float64)
        for l in range(L):
            for h in range(H):
                kind = (l * H + h) % 3
                s = (-np.abs(i[:, None] - i[None, :]) / (0.5 + h) if kind == 0 else
                     np.tile(rng.normal(0, 2, P), (P, 1)) if kind == 1 else rng.normal(0, 0.5, (P, P)))
                a = np.exp(s - s.max(-1, keepdims=True))
                maps[l, h] = a / a.sum(-1, keepdims=True)
        q, rm = quantize_rows(maps)
        dur = T / FRAME_RATE
        edges = np.linspace(0, dur, int(dur * 12) + 1)  # ~12 phones per second
        hm.utterances.append(HeadMapsUtterance(
            uid=f"long/utt{j}", duration_s=dur, frames=T, factor=f, maps_q=q, row_max=rm,
            metrics={k: rng.normal(size=(L, H)).astype(np.float32) for k in "GVDW"},
            logmel=rng.normal(-5, 2, (int(dur / 0.01) + 1, 80)).astype(np.float16),
            phone_start=edges[:-1], phone_end=edges[1:], phone_label=np.array(["aa", "b", "sil", "iy"] * len(edges))[:len(edges) - 1],
            quant_max_abs_error=0.0))
    return hm


TIMED = """(async () => {
  const root = document.querySelector('.sk-explorer'), ex = window.satkernExplorers[0];
  const frame = () => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
  const out = {};
  let t = performance.now();
  root.querySelector('.skx-cell[data-layer="7"][data-head="5"]').click();
  out.thumbnail_click_handler_ms = performance.now() - t;
  await frame(); out.thumbnail_click_ms = performance.now() - t;
  const over = root.querySelector('.skx-over'), r = over.getBoundingClientRect();
  t = performance.now();
  over.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + 200, clientY: r.top + 300, bubbles: true}));
  out.hover_handler_ms = performance.now() - t;
  await frame(); out.hover_ms = performance.now() - t;
  t = performance.now();
  over.dispatchEvent(new MouseEvent('click', {clientX: r.left + 200, clientY: r.top + 300, bubbles: true}));
  await frame(); out.row_click_ms = performance.now() - t;
  t = performance.now();
  await ex.setUtt(1); await frame(); out.switch_utterance_ms = performance.now() - t;
  return out;
})()"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--out", default="/tmp/satkern-explorer-budget.html")
    ap.add_argument("--head-maps", help="time the maps of a real run (satkern analyze --head-maps 2) instead of synthetic ones")
    args = ap.parse_args(argv)
    if find_chromium() is None:
        print("explorer_budget: no chromium executable (apt-get install chromium)", file=sys.stderr)
        return 2
    if args.head_maps:
        from satkern.analysis import load_head_maps

        try:
            hm = load_head_maps(args.head_maps)
        except ValueError as e:
            print(f"explorer_budget: --head-maps: {e}", file=sys.stderr)
            return 2
        args.layers, args.heads = hm.utterances[0].maps_q.shape[:2]
        if len(hm.utterances) < 2:
            print("explorer_budget: --head-maps: expected maps of at least 2 utterances (the switch is timed)",
                  file=sys.stderr)
            return 2
    else:
        hm = synthetic(args.seconds, args.layers, args.heads)
    html = page(hm, title=f"{hm.utterances[0].frames} frames, {args.layers} x {args.heads} heads")
    out = Path(args.out)
    out.write_text(html, encoding="utf-8")
    u = hm.utterances[0]
    print(f"page {out}: {len(html.encode()) / 1e6:.2f} MB; {len(hm.utterances)} utterances of {u.frames} frames "
          f"pooled to {u.bins} bins (factor {u.factor}), {args.layers * args.heads} heads each")
    with open_page(out) as p:
        t0 = time.perf_counter()
        p.wait_for("document.querySelector('.sk-explorer').dataset.ready === '1'", timeout=60, poll=0.01)
        ready = int(p.evaluate("document.querySelector('.sk-explorer').dataset.readyMs"))
        print(f"open: first utterance drawn {ready} ms after navigation started "
              f"(python saw it {1000 * (time.perf_counter() - t0):.0f} ms after the load event)")
        for k, v in p.evaluate(TIMED, await_promise=True).items():
            print(f"{k}: {v:.0f} ms")
        errors, outside = p.console_errors(), p.outside_requests()
    print(f"console errors: {errors or 'none'}; requests beyond the page: {outside or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

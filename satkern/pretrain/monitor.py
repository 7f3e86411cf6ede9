"""What a pre-training run is learning, measured while it learns (``satkern pretrain``'s monitor).

Every ``monitor_every`` steps, on a fixed held-out set (the same utterances and the same masks at
every measurement):

* **reconstruction**: masked-frame L1 of the model's head and its ratio to predicting each masked
  frame as its utterance's mean frame (:func:`satkern.pretrain.evaluate.masked_reconstruction`:
  every chosen span zeroed, masks from a fixed seed);
* **locality**: per head the mean attention distance in frames, ``-D * T`` per utterance
  averaged over utterances, with ``D`` from ``satkern.patch`` statistics (no ``T x T`` map is
  materialized) on the clean (unmasked) input, as the paper analyses it; the number of heads
  within :data:`LOCAL_FRAMES` frames; the spread (max - min) of the corpus D over heads.

Rows go to ``monitor.csv`` (one per measurement: the summary columns, then one ``dist_L<l>_H<h>``
column per head); :func:`plot_monitor` draws ``monitor.png`` (loss and locality over steps).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from .evaluate import masked_reconstruction

LOCAL_FRAMES = 2.0  # a head is "local" when its mean attention distance is at most this many frames
SUMMARY_COLUMNS = ["step", "masked_l1", "mean_frame_l1", "ratio", "local_heads", "min_distance",
                   "median_distance", "d_spread"]


@dataclass
class HeldOut:
    """The fixed measurement set: per-utterance features ``[T_i, F]`` (``T_i`` a multiple of the
    downsample rate), the masking ``consecutive`` C and the mask seed."""

    feats: List[torch.Tensor]
    consecutive: int
    seed: int = 0


def choose_spread(items: Sequence, n: int) -> List:
    """``n`` items spread evenly over ``items`` (in order): every speaker of a sorted TIMIT-style
    list is represented when ``n`` is at least the number of speakers."""
    if n <= 0 or not items:
        return []
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


@torch.no_grad()
def patched_distances(model, feats: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``{"distance": [L, H], "D": [L, H]}`` float64: the mean over utterances of each head's mean
    attention distance (frames) and of its D, from one padded batch through ``satkern.patch``
    (the patch analyses every utterance of a padded batch as if it ran alone)."""
    from .. import patch

    R = model.config.downsample_rate
    feats = [f for f in feats if f.shape[0] >= R]
    if not feats:
        raise ValueError("patched_distances: no utterance long enough")
    p = next(model.parameters())
    lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)
    x = p.new_zeros((len(feats), int(lengths.max()), feats[0].shape[1]))
    for b, f in enumerate(feats):
        x[b, :f.shape[0]] = f.to(x)
    with patch(model, stats=("distance",)) as h:
        model(x, lengths.to(p.device))
    D = h.metrics.D.double().cpu()  # [U, L, H]
    T = h.lengths.double().cpu()[:, None, None]  # model frames per utterance
    return {"distance": (-D * T).mean(0), "D": D.mean(0)}


def measure(model, head, held: HeldOut) -> Dict[str, object]:
    """One monitor row (summary values and the per-head distances ``[L, H]``). The model and head
    are put in eval mode for the measurement and returned to the mode they were in."""
    modes = (model.training, head.training)
    # measure with the model's own eager attention (as the independent evaluation does), not the
    # training-time SDPA override pretrain installs; it is put back afterwards
    overrides = {m: m.__dict__.pop("attend") for m in model.attention_modules() if "attend" in m.__dict__}
    model.eval()
    head.eval()
    device = next(model.parameters()).device
    feats = [f.to(device) for f in held.feats]
    try:
        rec = masked_reconstruction(model, head, feats, held.consecutive, seed=held.seed)
        dist = patched_distances(model, feats)
    finally:
        for m, fn in overrides.items():
            m.attend = fn
        model.train(modes[0])
        head.train(modes[1])
    d = dist["distance"].flatten()
    Dm = dist["D"]
    return {"masked_l1": rec["model_l1"], "mean_frame_l1": rec["mean_frame_l1"], "ratio": rec["ratio"],
            "local_heads": int((d <= LOCAL_FRAMES).sum()), "min_distance": float(d.min()),
            "median_distance": float(d.median()), "d_spread": float(Dm.max() - Dm.min()),
            "distance": dist["distance"]}


def head_columns(layers: int, heads: int) -> List[str]:
    return [f"dist_L{l}_H{h}" for l in range(layers) for h in range(heads)]


class MonitorLog:
    """``monitor.csv`` of a run: appended one row per measurement, trimmed on resume."""

    def __init__(self, path: Path, layers: int, heads: int):
        self.path = Path(path)
        self.columns = SUMMARY_COLUMNS + head_columns(layers, heads)

    def trim(self, max_step: int) -> None:
        """Keep the rows up to ``max_step`` (a killed run may have measured after its last checkpoint; a
        row torn while it was written, fields missing, is dropped); creates the file with its header when
        missing. Written atomically."""
        rows = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if None not in r.values() and int(r["step"]) <= max_step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, step: int, row: Dict[str, object]) -> None:
        values = [step] + [_fmt(row[c]) for c in SUMMARY_COLUMNS[1:]]
        values += [f"{float(v):.4f}" for v in row["distance"].flatten().tolist()]
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(values)


def _fmt(v) -> str:
    return str(v) if isinstance(v, int) else f"{float(v):.6f}"


def read_monitor(path) -> List[Dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def plot_monitor(monitor_csv, out_png, loss_csv: Optional[str] = None, title: str = "") -> None:
    """``monitor.png``: left, the training loss (per step, and a running mean) with the held-out
    ratio to the mean-frame baseline; right, the smallest and median mean attention distance and the
    number of local heads over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_monitor(monitor_csv)
    if not rows:
        raise ValueError(f"{monitor_csv}: no measurements to plot")
    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    if loss_csv and os.path.isfile(loss_csv):
        with open(loss_csv, newline="") as f:
            lr = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]
        if lr:
            xs, ys = zip(*lr)
            a.plot(xs, ys, color="0.8", lw=0.5, label="training loss (batch)")
            k = max(1, len(ys) // 100)
            run = [sum(ys[max(0, i - k + 1):i + 1]) / len(ys[max(0, i - k + 1):i + 1]) for i in range(len(ys))]
            a.plot(xs, run, color="0.3", lw=1, label=f"training loss (mean of {k})")
    a.set_xlabel("step")
    a.set_ylabel("masked L1")
    a2 = a.twinx()
    a2.plot(steps, [r["ratio"] for r in rows], "o-", color="tab:red", ms=3, label="held-out L1 / mean-frame L1")
    a2.axhline(1.0, color="tab:red", lw=0.5, ls=":")
    a2.set_ylabel("held-out ratio (lower is better)", color="tab:red")
    h1, l1 = a.get_legend_handles_labels()
    h2, l2 = a2.get_legend_handles_labels()
    a.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right")
    b.plot(steps, [r["min_distance"] for r in rows], "o-", ms=3, label="most local head")
    b.plot(steps, [r["median_distance"] for r in rows], "s-", ms=3, label="median head")
    b.axhline(LOCAL_FRAMES, color="0.5", lw=0.5, ls=":")
    b.set_yscale("log")
    b.set_xlabel("step")
    b.set_ylabel("mean attention distance (frames, log)")
    b2 = b.twinx()
    b2.plot(steps, [r["local_heads"] for r in rows], "^-", color="tab:green", ms=3,
            label=f"heads within {LOCAL_FRAMES:g} frames")
    b2.set_ylabel("local heads", color="tab:green")
    h1, l1 = b.get_legend_handles_labels()
    h2, l2 = b2.get_legend_handles_labels()
    b.legend(h1 + h2, l1 + l2, fontsize=7, loc="center right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = Path(str(out_png) + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_png)

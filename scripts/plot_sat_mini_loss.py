#!/usr/bin/env python3
"""The model card's loss curve: ``satkern pretrain`` loss.csv of each run -> one PNG.

    python scripts/plot_sat_mini_loss.py --run sat-mini-m3=/work/data/train/m3 --run ... --out docs/models/sat-mini-loss.png
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SMOOTH_STEPS = 25  # moving-average window (steps): one step's loss is one small batch, noisy


def loss_figure(runs):
    """``runs``: {label: DataFrame with step, loss} -> matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for label, df in runs.items():
        line, = ax.plot(df["step"], df["loss"].rolling(SMOOTH_STEPS, min_periods=1).mean(), label=label)
        ax.plot(df["step"], df["loss"], color=line.get_color(), alpha=0.15, linewidth=0.5)
    ax.set_xlabel("step")
    ax.set_ylabel(f"masked-frame L1 (train batches; {SMOOTH_STEPS}-step mean)")
    ax.set_title("satkern pretrain: sat-mini models on the synthetic corpus (CPU)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="LABEL=RUN_FOLDER (repeat)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    runs = {}
    for item in args.run:
        label, _, folder = item.partition("=")
        runs[label] = pd.read_csv(Path(folder) / "loss.csv")
    fig = loss_figure(runs)
    out = Path(args.out)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

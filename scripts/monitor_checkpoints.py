#!/usr/bin/env python3
"""``monitor.csv`` / ``monitor.png`` of a ``satkern pretrain`` run from its saved checkpoints.

``satkern pretrain`` measures its held-out set while it trains (``--monitor-every``). A run started
without the monitor (or with it off) keeps its ``states-<step>.ckpt`` files; this script measures
each of them with the very same function (:func:`satkern.pretrain.monitor.measure`, the run's own
options for the held-out split, size and masks) and writes the same two files::

    python scripts/monitor_checkpoints.py RUN_DIR [--every N]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import torch

    from satkern.models.s3prl import read_checkpoint
    from satkern.pretrain import PretrainConfig, build_model
    from satkern.pretrain.monitor import MonitorLog, measure, plot_monitor
    from satkern.pretrain.train import _held_out

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="the run's --out folder (config.json and states-<step>.ckpt files)")
    ap.add_argument("--every", type=int, default=0, help="only checkpoints whose step is a multiple of N")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    saved = json.loads((run / "config.json").read_text())
    known = PretrainConfig.__dataclass_fields__
    cfg = PretrainConfig(**{k: v for k, v in saved.items() if k in known})
    if not cfg.monitor_every:
        cfg.monitor_every = 1
    torch.manual_seed(cfg.seed)
    model, head = build_model(cfg)  # the run's step-0 weights (seeded as pretrain seeds them)
    held, why = _held_out(cfg, model.features)
    if held is None:
        raise SystemExit(f"monitor_checkpoints: {run}: held-out measurements {why}")
    steps = sorted(int(m.group(1)) for p in run.glob("states-*.ckpt") if (m := re.match(r"states-(\d+)\.ckpt$", p.name)))
    if args.every:
        steps = [s for s in steps if s % args.every == 0 or s == steps[-1]]
    log = MonitorLog(run / "monitor.csv", cfg.layers, cfg.heads)
    log.trim(-1)
    log.append(0, measure(model, head, held))
    for step in steps:
        states = read_checkpoint(run / f"states-{step}.ckpt")
        model.load_state_dict(states["Transformer"])
        head.load_state_dict(states["SpecHead"])
        row = measure(model, head, held)
        log.append(step, row)
        print(f"step {step}: ratio {row['ratio']:.3f}, local heads {row['local_heads']}, most local "
              f"{row['min_distance']:.1f}, median {row['median_distance']:.1f}, D spread {row['d_spread']:.3f}",
              flush=True)
    plot_monitor(log.path, run / "monitor.png", loss_csv=str(run / "loss.csv"),
                 title=f"{run.name}: {cfg.layers} layers x {cfg.heads} heads, C = {cfg.mask_consecutive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

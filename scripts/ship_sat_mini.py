#!/usr/bin/env python3
"""Ship a pre-trained checkpoint as a satkern built-in model (float16, no optimizer).

    python scripts/ship_sat_mini.py --name sat-mini-m3 --checkpoint /work/data/train/m3/states-2000.ckpt \
        [--train-dir /work/data/train/m3]

Writes ``satkern/models/weights/<name>.pt`` (atomically) and records, in
``satkern/models/weights/sat-mini.json``, the file's sha256 and the metrics of the *shipped*
file (loaded back through ``satkern.models.load_model``) on the committed fixture utterance
``tests/fixtures/corpus/TEST/DR1/MKAL2/SX021.WAV`` -- what tests/models/test_trained.py checks to 1e-4 --
plus the training run's summary (steps, wall time, device) when ``--train-dir`` is given.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIXTURE_UTTERANCE = "tests/fixtures/corpus/TEST/DR1/MKAL2/SX021.WAV"


def main(argv=None) -> int:
    import torch

    from satkern.corpus.audio import load_audio
    from satkern.models import load_model
    from satkern.models.s3prl import read_checkpoint
    from satkern.models.trained import RECORDED_METRICS, WEIGHTS_DIR
    from satkern.pretrain import atomic_save, ship_checkpoint
    from satkern.pretrain.evaluate import fixture_metrics
    from satkern.models.s3prl.spec_head import load_spec_head

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--train-dir", help="the run's folder (summary.json, loss.csv) to record steps and wall time")
    args = ap.parse_args(argv)
    states = read_checkpoint(args.checkpoint)
    shipped = ship_checkpoint(states)
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    dest = WEIGHTS_DIR / f"{args.name}.pt"
    atomic_save(shipped, dest)
    torch.load(dest, weights_only=True)  # must load without any allow-list
    sm = load_model(str(dest))
    head = load_spec_head(dest, sm.model)
    C = int(shipped["Upstream_Config"]["task"]["mask_consecutive_min"])
    wav = load_audio(ROOT / FIXTURE_UTTERANCE, sm.sample_rate)
    metrics = fixture_metrics(sm.model, head, wav, C)
    entry = {"file": dest.name, "bytes": dest.stat().st_size,
             "sha256": hashlib.sha256(dest.read_bytes()).hexdigest(), "source_checkpoint": str(args.checkpoint),
             "step": shipped["Step"], "mask_consecutive": C,
             "parameters": {"transformer": sum(v.numel() for v in shipped["Transformer"].values()),
                            "spec_head": sum(v.numel() for v in shipped["SpecHead"].values())},
             "fixture_utterance": FIXTURE_UTTERANCE, "fixture_metrics": metrics}
    if args.train_dir:
        summ = Path(args.train_dir) / "summary.json"
        if summ.is_file():
            s = json.loads(summ.read_text())
            entry["training"] = {k: s.get(k) for k in ("steps", "final_loss", "wall_seconds_this_run", "device",
                                                       "torch", "threads", "utterances")}
        loss_csv = Path(args.train_dir) / "loss.csv"
        if loss_csv.is_file():
            import pandas as pd

            df = pd.read_csv(loss_csv)
            entry.setdefault("training", {})["loss_csv_last_elapsed_s"] = float(df["elapsed_s"].iloc[-1])
    record = json.loads(RECORDED_METRICS.read_text()) if RECORDED_METRICS.is_file() else {"version": 1, "models": {}}
    record["models"][args.name] = entry
    tmp = RECORDED_METRICS.with_name(RECORDED_METRICS.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, RECORDED_METRICS)
    print(f"shipped {args.name}: {dest} ({entry['bytes'] / 1e6:.2f} MB, step {entry['step']}, C={C}); "
          f"fixture masked L1 {metrics['masked_l1']:.4f} vs mean frame {metrics['mean_frame_l1']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

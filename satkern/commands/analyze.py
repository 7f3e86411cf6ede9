"""``satkern analyze``: the per-head corpus job (:func:`satkern.analysis.analyze`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..ops import STAT_NAMES
from ..jobs.options import add_job_options, job_options

NAME = "analyze"
HELP = "per-head analysis of a corpus"
DESCRIPTION = ("Per-head analysis (G, V, D, W, categories, phoneme relation maps) of a speech corpus "
               "with a patched model.")


def _add_analyze_args(ap: argparse.ArgumentParser, *, demo: bool = False) -> None:
    add_job_options(ap, io=not demo, device_help="cpu, cuda, cuda:N (default cpu; under torchrun cuda -> cuda:LOCAL_RANK)")
    ap.add_argument("--stats", default=",".join(STAT_NAMES),
                    help=f"comma-separated statistics (default {','.join(STAT_NAMES)}: metrics G, D, V, W)")
    ap.add_argument("--budget-seconds", type=float, default=40.0,
                    help="padded audio seconds per batch (default 40; 0: one utterance per batch)")
    ap.add_argument("--workers", type=int, default=0, help="audio loader processes (default 0: main process)")
    ap.add_argument("--per-utterance", action="store_true", help="also write utterances.parquet")
    ap.add_argument("--maps", type=int, default=0, metavar="K",
                    help="store attention maps (maps.npz, for satkern report) of the K most global, vertical and "
                         "diagonal heads, an average and an extreme utterance each (default 0: none; implies "
                         "--per-utterance)")
    ap.add_argument("--head-maps", type=int, default=0, metavar="N",
                    help="store every layer x head's map of N utterances spread by length (head_maps.npz, for the "
                         "report's head explorer and satkern.show; pooled to at most 256 bins per axis, uint8 per "
                         "row; default 0: none)")
    ap.add_argument("--head-maps-for", default="", metavar="ID[,ID...]",
                    help="store every head's map of these utterances too (ids as in utterances.parquet)")
    ap.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    ap.add_argument("--fold-39", action="store_true", help="fold TIMIT-61 / ARPAbet phones into the 39 classes")
    ap.add_argument("--no-phone-relations", action="store_true", help="skip the phoneme relation maps")
    ap.add_argument("--no-resample", action="store_true", help="skip files not at the model's rate")
    ap.add_argument("--checkpoint-seconds", type=float, default=60.0, help="checkpoint interval (default 60 s)")
    ap.add_argument("--max-utterances", type=int, help="analyze only the first N utterances (by id)")
    ap.add_argument("--s3prl-whole-sequence", action="store_true",
                    help="s3prl checkpoints: run every utterance at once; default: like s3prl, split utterances "
                         "longer than the checkpoint's task.sequence_length into chunks")
    ap.add_argument("--min-seconds", type=float, default=0.25,
                    help="skip clips shorter than this many seconds, with a reason (default 0.25)")
    ap.add_argument("--keep-checkpoint", action="store_true",
                    help="keep DIR/checkpoint/ after a successful run (default: removed once the outputs are written)")


def _config(args, *, model: str, corpus: str, out: str):
    from ..analysis import AnalyzeConfig

    return AnalyzeConfig(
        model=model, corpus=corpus, out=out, **job_options(args, io=False),
        stats=tuple(s.strip() for s in args.stats.split(",") if s.strip()), budget_seconds=args.budget_seconds,
        workers=args.workers, per_utterance=args.per_utterance, resume=args.resume,
        fold_39=args.fold_39,
        phone_relations=not args.no_phone_relations, allow_resample=not args.no_resample,
        checkpoint_seconds=args.checkpoint_seconds, max_utterances=args.max_utterances,
        min_seconds=args.min_seconds, keep_checkpoint=args.keep_checkpoint,
        s3prl_whole_sequence=args.s3prl_whole_sequence, maps=args.maps, head_maps=args.head_maps,
        head_maps_for=tuple(s.strip() for s in args.head_maps_for.split(",") if s.strip()))


def print_report(out: Path, summary: dict, file=None) -> None:
    """A short account of the run (on ``file``, default stdout): category counts, the most global, vertical and
    diagonal head, the files skipped per reason, and where the per-head table and the other outputs are. The
    table itself (one row per head: 144 for a HuBERT-base) is in ``heads.csv``, never printed."""
    from ..jobs.skips import skip_lines

    file = sys.stdout if file is None else file  # looked up now: stdout may have been replaced since import

    m = summary["model"]
    if m.get("random_weights"):
        print("!" * 72 + f"\n!! RANDOM WEIGHTS: {m['name']} is a built-in architecture with random weights;\n"
              "!! heads of an untrained model look alike -- this shows the pipeline, not a finding.\n" + "!" * 72,
              file=file)
    print(f"\nper-head metrics over {summary['counts']['utterances_analyzed']} utterances "
          f"({summary['audio_hours'] * 3600:.1f} s of audio), model {m['name']} ({m['layers']} layers x {m['heads']} heads)",
          file=file)
    if summary.get("categories"):
        cats = ", ".join(f"{k} {v}" for k, v in summary["categories"].items())
        print(f"categories: {cats}", file=file)
        print("  (a head's category is the metric it ranks best by among this model's heads, so every model, a "
              "random one too,\n   gets about a third of each; V and D are negated entropy and distance, so the "
              "larger (closer to 0),\n   the more vertical / diagonal; definitions in docs/METRICS.md)", file=file)
    for role, h in (summary.get("most") or {}).items():
        print(f"most {role}: layer {h['layer']} head {h['head']} ({h['metric']} = {h['value']:.4f})", file=file)
    for line in skip_lines(summary["skipped"]):
        print(line, file=file)
    thr = summary.get("throughput_audio_s_per_s")
    if thr:
        print(f"throughput: {thr:.1f} audio seconds per second on {summary['device']}", file=file)
    n_heads = m["layers"] * m["heads"]
    print(f"per-head table ({n_heads} heads: layer, head, G, V, D, W, category): {out / 'heads.csv'}", file=file)
    print(f"outputs in {out}/: {', '.join(summary['outputs'])}", file=file)


def run(args) -> int:
    from ..analysis import analyze

    summary = analyze(_config(args, model=args.model, corpus=args.corpus, out=args.out))
    if "model" in summary:  # rank 0
        print_report(Path(args.out), summary)
    return 0




def add_arguments(ap: argparse.ArgumentParser) -> None:
    _add_analyze_args(ap)

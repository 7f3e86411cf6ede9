"""``satkern`` command line: ``analyze`` (the corpus job), ``demo`` (the job on the fixture corpus),
``demo-op`` (the attention op alone).

    satkern analyze --model MODEL --corpus CORPUS --out DIR [options]
    torchrun --nproc-per-node N -m satkern analyze ...      (shards utterances over processes)
    satkern demo [--model NAME]                             (random weights; default hubert-base)
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from .ops import STAT_NAMES

FIXTURE_CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "corpus"
DEMO_MODEL = "hubert-base"


def _add_analyze_args(ap: argparse.ArgumentParser, *, demo: bool = False) -> None:
    if not demo:
        ap.add_argument("--model", required=True,
                        help="transformers model folder, s3prl checkpoint file, or built-in name (random weights)")
        ap.add_argument("--corpus", required=True,
                        help="folder of audio (recursive), LibriSpeech/TIMIT tree, or CSV/TSV manifest")
        ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu; under torchrun cuda -> cuda:LOCAL_RANK)")
    ap.add_argument("--backend", default="auto", help="satkern attention backend: auto, reference, cpu, triton, cuda")
    ap.add_argument("--stats", default=",".join(STAT_NAMES),
                    help=f"comma-separated statistics (default {','.join(STAT_NAMES)}: metrics G, D, V, W)")
    ap.add_argument("--budget-seconds", type=float, default=40.0,
                    help="padded audio seconds per batch (default 40; 0: one utterance per batch)")
    ap.add_argument("--workers", type=int, default=0, help="audio loader processes (default 0: main process)")
    ap.add_argument("--per-utterance", action="store_true", help="also write utterances.parquet")
    ap.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    ap.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a previous run")
    ap.add_argument("--fold-39", action="store_true", help="fold TIMIT-61 / ARPAbet phones into the 39 classes")
    ap.add_argument("--layout", choices=["manifest", "timit", "librispeech", "directory"],
                    help="corpus layout (default: detected)")
    ap.add_argument("--alignments", help="folder of TextGrids (e.g. MFA output) matched to audio by file stem")
    ap.add_argument("--phone-tier", help="TextGrid tier holding phones (default: 'phones' or the only interval tier)")
    ap.add_argument("--no-phone-relations", action="store_true", help="skip the phoneme relation maps")
    ap.add_argument("--no-resample", action="store_true", help="skip files not at the model's rate")
    ap.add_argument("--checkpoint-seconds", type=float, default=60.0, help="checkpoint interval (default 60 s)")
    ap.add_argument("--max-utterances", type=int, help="analyze only the first N utterances (by id)")
    ap.add_argument("--seed", type=int, default=0, help="seed for random-weight built-in models (default 0)")
    ap.add_argument("--trust-checkpoint", action="store_true", help="allow pickled s3prl checkpoints (runs their code)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config(args, *, model: str, corpus: str, out: str):
    from .analysis import AnalyzeConfig

    return AnalyzeConfig(
        model=model, corpus=corpus, out=out, device=args.device, backend=args.backend,
        stats=tuple(s.strip() for s in args.stats.split(",") if s.strip()), budget_seconds=args.budget_seconds,
        workers=args.workers, per_utterance=args.per_utterance, resume=args.resume, overwrite=args.overwrite,
        fold_39=args.fold_39, layout=args.layout, alignments=args.alignments, phone_tier=args.phone_tier,
        phone_relations=not args.no_phone_relations, allow_resample=not args.no_resample,
        checkpoint_seconds=args.checkpoint_seconds, max_utterances=args.max_utterances, seed=args.seed,
        progress=not args.no_progress and sys.stderr.isatty(), trust_checkpoint=args.trust_checkpoint)


def print_report(out: Path, summary: dict, file=sys.stdout) -> None:
    """The per-head table, category counts and where the outputs are."""
    import pandas as pd

    df = pd.read_csv(out / "heads.csv")
    m = summary["model"]
    if m.get("random_weights"):
        print("!" * 72 + f"\n!! RANDOM WEIGHTS: {m['name']} is a built-in architecture with random weights;\n"
              "!! heads of an untrained model look alike -- this shows the pipeline, not a finding.\n" + "!" * 72,
              file=file)
    print(f"\nper-head metrics over {summary['counts']['utterances_analyzed']} utterances "
          f"({summary['audio_hours'] * 3600:.1f} s of audio), model {m['name']} ({m['layers']} layers x {m['heads']} heads):",
          file=file)
    with pd.option_context("display.max_rows", 500, "display.width", 120, "display.float_format", "{:.4f}".format):
        print(df.to_string(index=False), file=file)
    if summary.get("categories"):
        cats = ", ".join(f"{k} {v}" for k, v in summary["categories"].items())
        print(f"\ncategories: {cats}", file=file)
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} files (reasons in summary.json)", file=file)
    thr = summary.get("throughput_audio_s_per_s")
    if thr:
        print(f"throughput: {thr:.1f} audio seconds per second on {summary['device']}", file=file)
    print(f"outputs in {out}/: {', '.join(summary['outputs'])}", file=file)


def cmd_analyze(args) -> int:
    from .analysis import analyze

    summary = analyze(_config(args, model=args.model, corpus=args.corpus, out=args.out))
    if "model" in summary:  # rank 0
        print_report(Path(args.out), summary)
    return 0


def cmd_demo(args) -> int:
    from .analysis import analyze

    corpus = args.corpus or str(FIXTURE_CORPUS)
    if not Path(corpus).exists():
        print(f"satkern demo: fixture corpus {corpus} not found (regenerate it with scripts/make_fixture_corpus.py)",
              file=sys.stderr)
        return 1
    out = args.out
    args.overwrite = True
    print(f"satkern demo: analyze {corpus} with built-in {args.model!r} -- RANDOM WEIGHTS "
          f"(no trained checkpoint ships with satkern; pass --model DIR for a real one)", flush=True)
    summary = analyze(_config(args, model=args.model, corpus=corpus, out=out))
    print_report(Path(out), summary)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="satkern", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="per-head analysis of a corpus", description="Per-head analysis (G, V, D, W, "
                       "categories, phoneme relation maps) of a speech corpus with a patched model.")
    _add_analyze_args(a)
    d = sub.add_parser("demo", help="analyze the bundled fixture corpus with a random-weight model")
    d.add_argument("--model", default=DEMO_MODEL, help=f"built-in name (default {DEMO_MODEL}, random weights)")
    d.add_argument("--corpus", help="default: tests/fixtures/corpus")
    d.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    _add_analyze_args(d, demo=True)
    sub.add_parser("demo-op", help="the attention op alone on HuBERT-base-shaped inputs", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo-op":
        from .demo_op import main as demo_op_main

        return demo_op_main(argv[1:])
    args = ap.parse_args(argv)
    from .analysis import ResumeError

    try:
        if args.command == "analyze":
            return cmd_analyze(args)
        return cmd_demo(args)
    except (ValueError, FileNotFoundError, FileExistsError, ResumeError) as e:
        # a bad argument, corpus or model spec: one line, no traceback
        print(f"satkern {args.command}: error: {e}", file=sys.stderr)
        return 2


def run_and_exit(argv: Optional[List[str]] = None) -> None:
    """``main`` then exit; under torchrun without interpreter finalization: gloo's worker threads can
    abort the process while it tears down (SIGABRT, "terminate called without an active exception",
    pytorch/pytorch#179291), which torchrun then reports as a failed job although every output was
    already written (atomically, fsynced) and the process group destroyed."""
    rc = main(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    run_and_exit()

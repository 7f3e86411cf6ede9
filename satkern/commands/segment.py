"""``satkern segment``: phoneme boundaries from attention heads (:func:`satkern.segment.job.segment_corpus`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..jobs.options import add_job_options, job_options

NAME = "segment"
HELP = "phoneme segmentation from attention heads, hidden states or MFCC, scored against alignments"
DESCRIPTION = ("Phoneme boundaries from the rows of attention heads (paper sec. 5), hidden states, log-mel or MFCC "
               "frames with the kernel-gram detector; alpha and beta tuned on --tune-on validation utterances, "
               "scored (strict hits, R-value) on the rest; Praat TextGrids, a precision-recall curve, summary.json. "
               "A corpus without alignments is segmented with untuned alpha and beta (TextGrids only, no scores).")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    from ..segment.job import DEFAULT_BETAS_TEXT, DEFAULT_PR_BETAS, UNTUNED_ALPHA_MULTIPLIER, UNTUNED_BETA

    add_job_options(ap, seed_help="seed of the tune split and of random-weight models (default 0)",
                    overwrite_help="replace a previous run in --out")
    ap.add_argument("--features", default="attention,mfcc",
                    help="comma-separated feature sets: attention, hidden:L (0 = input representation, L = output "
                         "of layer L), logmel, mfcc (default attention,mfcc)")
    ap.add_argument("--heads", default="auto",
                    help="'auto' (the --candidates most diagonal heads by D, then the --keep-heads best by tune "
                         "R-value) or LAYER:HEAD,... (0-based)")
    ap.add_argument("--heads-from", help="heads.csv of satkern analyze giving D per head (auto; default: computed "
                                         "over the tune split)")
    ap.add_argument("--candidates", type=int, default=8, help="auto: most diagonal heads considered (default 8)")
    ap.add_argument("--keep-heads", type=int, default=3, help="auto: heads kept by tune R-value (default 3)")
    ap.add_argument("--tune-on", type=int, default=10,
                    help="validation utterances for the grid search (default 10; 0: no tuning, untuned alpha and beta "
                         "as for a corpus without alignments)")
    ap.add_argument("--alpha-grid", default="auto",
                    help="comma-separated alpha values, or 'auto' (default: 1/16..4 times each feature set's median "
                         f"frame distance; with nothing to tune on, {UNTUNED_ALPHA_MULTIPLIER:g} times it)")
    ap.add_argument("--beta-grid", default=DEFAULT_BETAS_TEXT,
                    help="comma-separated beta values (default 2^(k/2), k = -4..6; with nothing to tune on, the "
                         f"default grid means {UNTUNED_BETA:g})")
    ap.add_argument("--pr-betas", default=",".join(f"{b:.4g}" for b in DEFAULT_PR_BETAS),
                    help="beta values the precision-recall curve sweeps (default 2^(k/4), k = -12..16)")
    ap.add_argument("--tolerance", type=float, default=0.02, help="hit tolerance in seconds (default 0.02)")
    ap.add_argument("--no-resample", action="store_true", help="skip files not at the model's rate")
    ap.add_argument("--max-utterances", type=int, help="only the first N utterances (by id)")
    ap.add_argument("--no-textgrids", action="store_true", help="do not write per-utterance TextGrids")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own; 1 is fastest on a busy "
                                                "shared machine)")


def config_from_args(args):
    from ..segment.job import SegmentConfig, parse_grid

    alpha = None if args.alpha_grid.strip() == "auto" else parse_grid(args.alpha_grid, "--alpha-grid")
    return SegmentConfig(
        **job_options(args), features=args.features, heads=args.heads,
        heads_from=args.heads_from, candidates=args.candidates, keep_heads=args.keep_heads, tune_on=args.tune_on,
        alpha_grid=alpha, beta_grid=parse_grid(args.beta_grid, "--beta-grid"),
        pr_betas=parse_grid(args.pr_betas, "--pr-betas"), tolerance=args.tolerance,
        allow_resample=not args.no_resample, max_utterances=args.max_utterances, textgrids=not args.no_textgrids)


def print_report(out: Path, summary: dict, file=None) -> None:
    """The scores table (when anything was scored), counts, R-values, skipped files per reason, outputs."""
    file = sys.stdout if file is None else file  # looked up at call time (captured streams)
    import pandas as pd

    from ..jobs.skips import skip_lines

    if summary["model"].get("random_weights"):
        print(f"!! RANDOM WEIGHTS: {summary['model']['name']} is untrained -- these scores show the pipeline only",
              file=file)
    df = pd.read_csv(out / "scores.csv", keep_default_na=False)
    if len(df):
        with pd.option_context("display.width", 140, "display.max_rows", 200, "display.float_format", "{:.4f}".format):
            print(df.to_string(index=False), file=file)
    c = summary["counts"]
    print(f"\n{c['segmented']} utterances segmented ({c['scored_tune']} tune, {c['scored_test']} test, "
          f"{c['unaligned_segmented']} without alignments), {c['skipped']} skipped; "
          f"{summary['utterances_per_second']:.2f} utterances/s on {summary['device']}", file=file)
    scoring = summary.get("scoring") or {}
    if scoring.get("note"):
        print(scoring["note"].replace("textgrids/", f"{out / 'textgrids'}/"), file=file)
    if scoring.get("scored", True):
        for name, r in summary["best_r_value"].items():
            head = f" {r['head']}" if r["head"] else ""
            test = f"{r['test']:.4f}" if r["test"] is not None else "n/a"
            print(f"  R-value {name}{head}: test {test}", file=file)
    for line in skip_lines(summary["skipped"]):
        print(line, file=file)
    print(f"outputs in {out}/: {', '.join(summary['outputs'])}", file=file)


def run(args) -> int:
    from ..segment.job import segment_corpus

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"argument '--threads' must be >= 1; got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    summary = segment_corpus(config_from_args(args))
    print_report(Path(args.out), summary)
    return 0


def interrupted(e):
    """What ``satkern segment`` says when SIGINT / SIGTERM stops it (``satkern.cli`` asks): it stops at once
    and keeps nothing to resume."""
    return e.restated(f"interrupted ({e.signal_name}): stopped at once; segment keeps no partial results (it has "
                      f"no --resume): run it again")

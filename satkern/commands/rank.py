"""``satkern rank``: head- and span-pruning curves with probing tasks (:func:`satkern.rank.job.rank`)."""
from __future__ import annotations

import argparse

from ..jobs.options import add_job_options, job_options

NAME = "rank"
HELP = "importance ranking: head- and span-pruning curves with probes"
DESCRIPTION = ("Prune heads cumulatively by G, V, D, W (or random / gradient orders) or limit every head's span, "
               "and measure reconstruction, phone and speaker probes after each step (paper sec. 7).")


def _csv(text: str):
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _int_list(text: str, arg: str):
    out = []
    for t in _csv(text):
        try:
            out.append(int(t))
        except ValueError:
            raise ValueError(f"argument {arg}: expected comma-separated integers; got {t!r}") from None
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    add_job_options(ap)
    ap.add_argument("--heads-from", help="heads.csv of satkern analyze for the same model (default: computed "
                                         "here on the train split)")
    ap.add_argument("--by", default="G,V,D,W,random",
                    help="comma-separated orders: G, V, D, W, random, gradient (default G,V,D,W,random)")
    ap.add_argument("--step", type=int, default=4, help="heads pruned per step (default 4)")
    ap.add_argument("--random-seeds", type=int, default=3, help="seeds of the random order (default 3)")
    ap.add_argument("--span", default="1,2,4,8,16,32,64",
                    help="comma-separated spans r for the span sweep (default 1,2,4,8,16,32,64; '' for none)")
    ap.add_argument("--span-mode", default="zero", help="zero, renorm, or zero,renorm (default zero)")
    ap.add_argument("--tasks", default="reconstruction,phone,speaker-frame,speaker-utterance",
                    help="comma-separated probing tasks (default: all four)")
    ap.add_argument("--train-split", default="TRAIN",
                    help="top folder name, '*', optionally with a per-speaker slice, e.g. 'TRAIN[:0.7]' (default TRAIN)")
    ap.add_argument("--test-split", default="TEST", help="like --train-split (default TEST)")
    ap.add_argument("--train-seconds", type=float, help="use about this much training audio (speakers in turn)")
    ap.add_argument("--test-seconds", type=float, help="use about this much test audio (speakers in turn)")
    ap.add_argument("--probe-seed", type=int, default=0, help="seed of every probe (default 0)")
    ap.add_argument("--probe-steps", type=int, default=None, help="Adam steps per probe (default 300)")
    ap.add_argument("--timing-seconds", type=float, default=30.0,
                    help="test audio timed per point with a full forward (default 30)")
    ap.add_argument("--timing-rounds", type=int, default=5,
                    help="interleaved rounds timing every point once each; the curves record the median, "
                         "the minimum and the spread (default 5)")
    ap.add_argument("--threads", type=int, help="torch threads for the run (default: torch's; on a busy 2-core "
                                                "machine 1 was many times faster, see the README)")
    ap.add_argument("--no-layer-cache", action="store_true",
                    help="recompute every layer at every point (default: reuse layers before the first refined one)")
    ap.add_argument("--fold-39", action="store_true", help="fold TIMIT-61 / ARPAbet phones into the 39 classes")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out (finished points are reused)")


def config_from_args(args):
    from ..rank.job import RankConfig
    from ..rank.probes import PROBE_STEPS

    return RankConfig(
        **job_options(args), heads_from=args.heads_from, orders=_csv(args.by),
        step=args.step, random_seeds=args.random_seeds, spans=_int_list(args.span, "--span"),
        span_modes=_csv(args.span_mode), tasks=_csv(args.tasks), train_split=args.train_split,
        test_split=args.test_split, train_seconds=args.train_seconds, test_seconds=args.test_seconds,
        probe_seed=args.probe_seed,
        probe_steps=PROBE_STEPS if args.probe_steps is None else args.probe_steps,
        timing_seconds=args.timing_seconds, timing_rounds=args.timing_rounds, cache_layers=not args.no_layer_cache, threads=args.threads, fold_39=args.fold_39,
        resume=args.resume)


def run(args) -> int:
    from ..jobs.skips import skip_lines
    from ..rank.job import rank, validate_config

    config = config_from_args(args)
    validate_config(config)  # every argument checked before the model or corpus is touched
    summary = rank(config)
    for task, why in summary["skipped_tasks"].items():
        print(f"skipped task {task}: {why}")
    for line in skip_lines(summary["skipped"]):
        print(line)
    print(f"curves for {len(summary['orders'])} orders and {len(summary['spans'])} spans x "
          f"{len(summary['span_modes'])} modes, tasks {', '.join(summary['tasks']) or '(none)'}; "
          f"{summary['wall_seconds']:.1f} s; outputs in {args.out}/: {', '.join(summary['outputs'])}")
    return 0

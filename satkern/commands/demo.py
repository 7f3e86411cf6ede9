"""``satkern demo`` (what ``make demo`` runs): the paper in one command on the committed fixture corpus.

analyze (with a few attention maps) -> segment -> a short rank run -> report, each into its own
folder under ``--out``, then prints the report's path. A step left out (``--skip``) or failed is
missing from the report, which names the command that makes it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .analyze import _add_analyze_args, _config, print_report

NAME = "demo"
HELP = "the paper in one command: analyze, segment, rank and report on the bundled fixture corpus"
DESCRIPTION = HELP
FIXTURE_CORPUS = Path(__file__).resolve().parent.parent.parent / "tests" / "fixtures" / "corpus"
# The demo's model: the shipped trained SAT (Mockingjay, C = 3; docs/models.md).
DEMO_MODEL = "sat-mini-m3"
DEMO_MAPS = 1  # heads per category with attention maps in the report
DEMO_HEAD_MAPS = 2  # utterances with every head's map, for the report's head explorer
# the short rank run: a few orders, coarse steps, one random seed, two spans
DEMO_RANK_ARGS = ["--by", "G,V,D,W,random", "--step", "12", "--random-seeds", "1", "--span", "2,8,32"]
DEMO_SEGMENT_ARGS = ["--features", "attention", "--heads", "auto", "--tune-on", "6"]


def add_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("--model", default=DEMO_MODEL, help=f"model (default {DEMO_MODEL})")
    d.add_argument("--corpus", help="default: tests/fixtures/corpus")
    d.add_argument("--out", default="demo_out",
                   help="output folder (default demo_out): analyze/, segment/, rank/ and report.html inside")
    d.add_argument("--skip", default="", help="comma-separated steps to leave out: segment, rank")
    _add_analyze_args(d, demo=True)
    d.set_defaults(maps=DEMO_MAPS, head_maps=DEMO_HEAD_MAPS)


def _cli_step(step: str, argv, label: str) -> int:
    """Run ``satkern <step> ...`` in this process (the command calls its library function); ``label``: "k/N"."""
    from ..cli import main

    print(f"\nsatkern demo {label}: {step}: satkern {' '.join(argv)}", flush=True)
    try:
        return main(argv)
    except Exception:  # a crash in one step must not cost the report of the others: shown, then counted as failed
        import traceback

        traceback.print_exc()
        print(f"satkern demo: the {step} step crashed (traceback above); the report leaves it out", file=sys.stderr)
        return 1


def run(args) -> int:
    from ..analysis import analyze
    from ..jobs.files import check_out_dir
    from ..report import write_report

    t0 = time.perf_counter()
    corpus = args.corpus or str(FIXTURE_CORPUS)
    if not Path(corpus).exists():
        raise FileNotFoundError(f"fixture corpus {corpus} not found (regenerate it with scripts/make_fixture_corpus.py)")
    root = check_out_dir(args.out)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"segment", "rank"}
    if unknown:
        raise ValueError(f"--skip: unknown steps {sorted(unknown)}; choose from segment, rank")
    root.mkdir(parents=True, exist_ok=True)
    analyze_dir, segment_dir, rank_dir = root / "analyze", root / "segment", root / "rank"
    args.overwrite = True
    # the steps that run, numbered k/N in what is printed (a step left out by --skip gets no number)
    steps = ["analyze"] + [s for s in ("segment", "rank") if s not in skip] + ["report"]

    def label(step: str) -> str:
        return f"{steps.index(step) + 1}/{len(steps)}"

    # 1. analyze, with maps for the report
    print(f"satkern demo {label('analyze')}: analyze {corpus} with {args.model!r} (--maps {args.maps}, "
          f"--head-maps {args.head_maps})", flush=True)
    summary = analyze(_config(args, model=args.model, corpus=corpus, out=str(analyze_dir)))
    print_report(analyze_dir, summary)

    failed, ran = [], []
    # 2. segmentation from the most diagonal heads (satkern.segment)
    if "segment" in skip:
        print("\nsatkern demo: segment skipped (--skip)")
    else:
        argv = ["segment", "--model", args.model, "--corpus", corpus, "--out", str(segment_dir), "--overwrite", *DEMO_SEGMENT_ARGS]
        (ran if _cli_step("segment", argv, label("segment")) == 0 else failed).append("segment")

    # 3. a short importance-ranking run (satkern.rank), orders from analyze's heads.csv
    if "rank" in skip:
        print("\nsatkern demo: rank skipped (--skip)")
    else:
        argv = ["rank", "--model", args.model, "--corpus", corpus, "--out", str(rank_dir),
                "--heads-from", str(analyze_dir / "heads.csv"), "--overwrite", *DEMO_RANK_ARGS]
        (ran if _cli_step("rank", argv, label("rank")) == 0 else failed).append("rank")

    # 4. the report over what this run made (a stale folder of an earlier demo is left out)
    runs = [analyze_dir] + [d for d, step in ((segment_dir, "segment"), (rank_dir, "rank")) if step in ran]
    print(f"\nsatkern demo {label('report')}: report from {', '.join(map(str, runs))}", flush=True)
    res = write_report(runs, root / "report.html", progress=not args.no_progress and sys.stderr.isatty())
    for part in res.sections_missing:
        print(f"satkern demo: the report has no {part} part")
    print(f"satkern demo: finished in {time.perf_counter() - t0:.0f} s" +
          (f"; steps that failed: {', '.join(failed)}" if failed else ""))
    print(f"satkern demo: report at {res.path.resolve()} ({res.size_bytes / 1e6:.2f} MB)", flush=True)
    return 1 if failed else 0


def interrupted(e):
    """What ``satkern demo`` says when SIGINT / SIGTERM stops it (``satkern.cli`` asks): its steps run with
    --overwrite, so nothing is resumed; the step's own line would point at a --resume the demo does not have."""
    return e.restated(f"interrupted ({e.signal_name}); the demo keeps no partial results: run it again to start "
                      f"over")

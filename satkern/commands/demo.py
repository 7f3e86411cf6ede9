"""``satkern demo``: the corpus job on the committed fixture corpus (what ``make demo`` runs)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .analyze import _add_analyze_args, _config, print_report

NAME = "demo"
HELP = "analyze the bundled fixture corpus with a random-weight model"
DESCRIPTION = HELP
FIXTURE_CORPUS = Path(__file__).resolve().parent.parent.parent / "tests" / "fixtures" / "corpus"
DEMO_MODEL = "hubert-base"


def add_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("--model", default=DEMO_MODEL, help=f"built-in name (default {DEMO_MODEL}, random weights)")
    d.add_argument("--corpus", help="default: tests/fixtures/corpus")
    d.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    _add_analyze_args(d, demo=True)


def run(args) -> int:
    from ..analysis import analyze

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



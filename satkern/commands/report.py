"""``satkern report``: one offline HTML page of the paper's figures (:func:`satkern.report.write_report`)."""
from __future__ import annotations

import argparse
import sys

NAME = "report"
HELP = "one self-contained HTML report of analyze / segment / rank runs"
DESCRIPTION = ("Read the output folders of satkern analyze (--maps K for attention maps), segment and rank (any "
               "subset) and write one self-contained HTML page (no network requests) with the paper's figures, "
               "uniform-attention baselines and a written summary. Runs of several models give one page with the "
               "models side by side on common axes.")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                    help="output folders of satkern analyze / segment / rank (or a folder holding them); runs of "
                         "several models are shown side by side")
    ap.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..report import MAKES_HINT, write_report

    res = write_report(args.run_dirs, args.out, progress=not args.no_progress and sys.stderr.isatty())
    for part in res.sections_missing:
        kind = part.split(" of ", 1)[0]
        print(f"satkern report: no {part} part in the given runs; make it with: {MAKES_HINT[kind]}")
    models = f"{res.models} models side by side, " if res.models > 1 else ""
    print(f"satkern report: wrote {res.path} ({res.size_bytes / 1e6:.2f} MB; {models}from "
          f"{', '.join(map(str, res.folders))})")
    return 0

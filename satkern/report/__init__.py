"""``satkern report``: the paper's figures for a user's own runs, as one offline HTML page.

:func:`write_report` reads the output folders of ``satkern analyze`` (with ``--maps K`` for the
attention maps), ``satkern segment`` and ``satkern rank`` -- any subset -- and writes one
self-contained HTML file. Parts: :mod:`.load` (reading and checking run folders),
:mod:`.figures` (one function per figure, data in, matplotlib ``Figure`` out), :mod:`.html`
(the page), :mod:`.browser` (headless Chromium check, for tests and screenshots).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import matplotlib

from ..jobs.files import atomic_write_bytes
from .load import MAKES as MAKES_HINT, ReportData, RunFolderError, load_groups, load_runs

matplotlib.use("Agg", force=False)  # library code never opens a window; figures use the object API anyway

__all__ = ["write_report", "ReportResult", "RunFolderError", "load_runs", "load_groups", "ReportData", "MAKES_HINT"]


@dataclass
class ReportResult:
    path: Path
    size_bytes: int
    sections_missing: List[str]  # keys of load.MAKES the page says how to make (several models: "KIND of MODEL")
    folders: List[Path]
    models: int = 1  # models on the page (more than one: the side-by-side page)


def _check_out(out) -> Path:
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"satkern report: --out {out} is a folder; give the path of the HTML file to write")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"satkern report: --out {out}: folder {parent} does not exist (create it first)")
    return out


def write_report(run_dirs: Sequence, out, *, progress: bool = False) -> ReportResult:
    """Read ``run_dirs``, render the page and write it to ``out`` atomically (temp file + rename).

    Runs of one model give its report; runs of several models (grouped by the model their
    ``summary.json`` names) give the side-by-side page (:mod:`.compare`). Raises
    ``FileNotFoundError`` (a missing run folder, or ``out``'s folder missing) or ``ValueError``
    (:class:`RunFolderError`: not a run folder, corrupt files, two runs of one kind for one model, a
    run naming no model among several models) before anything is written. ``progress``: a progress
    bar over the sections.
    """
    from .html import render

    out = _check_out(out)
    groups = load_groups(run_dirs)
    if len(groups) == 1:
        data = groups[0]
        page = render(data, progress=progress).encode("utf-8")
        missing = data.missing()
    else:
        from .compare import labels, render_compare

        page = render_compare(groups, progress=progress).encode("utf-8")
        missing = [f"{k} of {name}" for name, g in zip(labels(groups), groups)
                   for k in ("analyze", "segment", "rank") if getattr(g, k) is None]
    atomic_write_bytes(out, page)
    return ReportResult(path=out, size_bytes=len(page), sections_missing=missing,
                        folders=[p for g in groups for p in g.folders], models=len(groups))

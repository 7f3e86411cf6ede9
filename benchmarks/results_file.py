"""Where a benchmark's Markdown result goes: ``benchmarks/results/<name>-cpu-<UTC stamp>[-quick].md``."""
from __future__ import annotations

import datetime as _dt
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def publish(name: str, lines, no_write: bool, quick: bool) -> str:
    """Print the result's Markdown ``lines`` and, unless ``no_write``, write them to a new results file
    for benchmark ``name`` (its path printed)."""
    text = "\n".join(lines) + "\n"
    print(text)
    if not no_write:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M")
        path = os.path.join(RESULTS, f"{name}-cpu-{stamp}{'-quick' if quick else ''}.md")
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {path}")
    return text

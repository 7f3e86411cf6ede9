"""Praat TextGrid files (long text format) holding boundary points: one point tier per feature set.

Praat's ``TextTier`` class (a point tier) holds time points with a mark; every boundary is a
point with the mark ``"|"``. :func:`satkern.corpus.parse_textgrid` reads these files back.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

BOUNDARY_MARK = "|"


def _quote(text: str) -> str:
    return '"' + str(text).replace('"', '""') + '"'


def _num(x: float) -> str:
    return repr(float(x))  # shortest round-trip decimal


def textgrid_text(tiers: Sequence[Tuple[str, Iterable[float]]], xmax: float, xmin: float = 0.0) -> str:
    """A TextGrid (long text format) with one point tier per ``(name, times_in_seconds)``;
    points outside ``[xmin, xmax]`` are clipped to the interval."""
    lines: List[str] = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
                        f"xmin = {_num(xmin)} ", f"xmax = {_num(xmax)} ", "tiers? <exists> ",
                        f"size = {len(tiers)} ", "item []: "]
    for n, (name, times) in enumerate(tiers, 1):
        pts = sorted(min(max(float(t), xmin), xmax) for t in times)
        lines += [f"    item [{n}]:", '        class = "TextTier" ', f"        name = {_quote(name)} ",
                  f"        xmin = {_num(xmin)} ", f"        xmax = {_num(xmax)} ", f"        points: size = {len(pts)} "]
        for i, t in enumerate(pts, 1):
            lines += [f"        points [{i}]:", f"            number = {_num(t)} ",
                      f"            mark = {_quote(BOUNDARY_MARK)} "]
    return "\n".join(lines) + "\n"


__all__ = ["textgrid_text", "BOUNDARY_MARK"]

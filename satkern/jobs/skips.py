"""The skip record of a corpus job in a few lines: the files left out, counted per reason (``summary.json``
``skipped`` lists every one with its full reason).

A reason names its file and often a number of its own ("<path>: unreadable audio (...)", "too short:
0.112 s, below the minimum clip length of 0.25 s (--min-seconds)"), so reasons are counted by their
*kind*: the reason without the file's path, up to its first colon or parenthesis ("unreadable audio",
"too short"). Each line shows one file of the kind with what its reason says beyond the kind.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Sequence


@dataclass
class SkipGroup:
    """The files skipped for one kind of reason: how many, and the first of them as an example."""

    kind: str
    count: int
    example_path: str
    example_detail: str  # the example's reason beyond the kind ("" when the reason is the kind)
    same_reason: bool  # every file of the group has the example's reason word for word


def _without_path(reason: str, path: str) -> str:
    """The reason without the file's own path where it names the file ("<path>: ...", "<path>:12: ...",
    "...: <path>"); a path quoted inside a message (a library's own error text) stays."""
    text = " ".join(str(reason).split())
    if path:
        if text.startswith(path):
            text = re.sub(r"^:(?:\d+:)? ?", "", text[len(path):])
        if text.endswith(f": {path}"):
            text = text[: -len(path) - 2]
    return text.strip()


def reason_kind(reason: str, path: str = "") -> str:
    """The kind of a skip reason: the reason without ``path``, up to its first ": " or " ("."""
    text = _without_path(reason, path)
    kind = re.split(r": | \(", text, maxsplit=1)[0].strip(" ,;")
    return kind or text or "no reason given"


def _detail(reason: str, path: str, kind: str) -> str:
    text = _without_path(reason, path)
    rest = text[len(kind):] if text.startswith(kind) else text
    rest = rest.strip().lstrip(":,;").strip()
    if rest.startswith("(") and rest.endswith(")") and rest.count("(") == 1:
        rest = rest[1:-1]
    return rest


def group_skips(skipped: Sequence[dict]) -> List[SkipGroup]:
    """``skipped`` (``[{"utterance", "path", "reason"}]``) grouped by :func:`reason_kind`, the largest group
    first (ties: by kind)."""
    groups: dict = {}
    for s in skipped:
        path, reason = str(s.get("path") or ""), str(s.get("reason") or "")
        kind = reason_kind(reason, path)
        g = groups.get(kind)
        if g is None:
            groups[kind] = [SkipGroup(kind, 1, path or str(s.get("utterance", "")), _detail(reason, path, kind), True),
                            _without_path(reason, path)]
        else:
            g[0].count += 1
            g[0].same_reason = g[0].same_reason and _without_path(reason, path) == g[1]
    return sorted((g for g, _ in groups.values()), key=lambda g: (-g.count, g.kind))


def skip_lines(skipped: Sequence[dict]) -> List[str]:
    """One line per kind of reason, e.g. ``skipped 3 files: too short; e.g. a.wav: 0.112 s, below the minimum
    clip length of 0.25 s (--min-seconds)``; no line when nothing was skipped."""
    lines = []
    for g in group_skips(skipped):
        files = "1 file" if g.count == 1 else f"{g.count} files"
        if g.same_reason:
            what = g.kind + (f" ({g.example_detail})" if g.example_detail else "")
            lines.append(f"skipped {files}: {what}; e.g. {g.example_path}")
        else:
            lines.append(f"skipped {files}: {g.kind}; e.g. {g.example_path}"
                         + (f": {g.example_detail}" if g.example_detail else ""))
    return lines


__all__ = ["SkipGroup", "reason_kind", "group_skips", "skip_lines"]

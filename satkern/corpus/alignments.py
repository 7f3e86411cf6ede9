"""Phone alignments: TIMIT ``.PHN`` files and Praat TextGrid phone tiers (long and short text formats).

Both parsers return :class:`Segment` lists in *seconds*-free units the caller chooses:
``.PHN`` offsets are samples at the audio file's own rate; TextGrid times are seconds.
:func:`read_alignment` returns segments in samples at a requested rate for either.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

PHONE_TIER_NAMES = ("phones", "phone", "phonemes", "phoneme", "phns", "phn", "segments")


class AlignmentError(ValueError):
    """A missing or malformed alignment file (the utterance is skipped with this message)."""


@dataclass(frozen=True)
class Segment:
    """One labelled span ``[start, end)``; units are the reader's (samples or seconds)."""

    start: float
    end: float
    label: str


def parse_phn(path) -> List[Segment]:
    """TIMIT ``.PHN``: one ``START END LABEL`` line per phone, integer sample offsets."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise AlignmentError(f"alignment file missing: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AlignmentError(f"alignment file unreadable: {path}: {e}") from None
    segs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise AlignmentError(f"{path}:{n}: expected 'START END LABEL', got {line!r}")
        try:
            a, b = int(parts[0]), int(parts[1])
        except ValueError:
            raise AlignmentError(f"{path}:{n}: sample offsets must be integers, got {line!r}") from None
        if a < 0 or b < a:
            raise AlignmentError(f"{path}:{n}: bad span {a}..{b}")
        segs.append(Segment(a, b, parts[2]))
    if not segs:
        raise AlignmentError(f"{path}: no phone segments")
    return segs


# Praat text files are a stream of numbers, quoted strings ("" escapes a quote) and flags;
# the long format adds `name =` labels and `[i]` indices, which the tokenizer skips.
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|(<exists>|<absent>)|(?<![\w.\[-])([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.\]])')
_INDEX = re.compile(r"\[\s*\d+\s*\]")


def _tokens(text: str):
    for m in _TOKEN.finditer(_INDEX.sub(" ", text)):
        if m.group(1) is not None:
            yield m.group(1).replace('""', '"')
        elif m.group(2) is not None:
            yield m.group(2)
        else:
            yield float(m.group(3))


@dataclass
class Tier:
    name: str
    kind: str  # "IntervalTier" | "TextTier"
    items: list  # IntervalTier: Segment(seconds); TextTier: (time, mark)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith(b"\xfe\xff") or raw.startswith(b"\xff\xfe"):
        return raw.decode("utf-16")
    if raw.startswith(b"ooBinaryFile"):
        raise AlignmentError(f"{path}: binary TextGrid is not supported; save it as text from Praat")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_textgrid(path) -> List[Tier]:
    """All tiers of a Praat TextGrid (long or short text format, UTF-8 or UTF-16)."""
    path = Path(path)
    try:
        text = _read_text(path)
    except FileNotFoundError:
        raise AlignmentError(f"alignment file missing: {path}") from None
    except OSError as e:
        raise AlignmentError(f"alignment file unreadable: {path}: {e}") from None
    tok = list(_tokens(text))
    pos = 0

    def take(kind):
        nonlocal pos
        if pos >= len(tok):
            raise AlignmentError(f"{path}: TextGrid ends early")
        t = tok[pos]
        pos += 1
        if kind is float and not isinstance(t, float):
            raise AlignmentError(f"{path}: malformed TextGrid (expected a number, got {t!r})")
        if kind is str and not isinstance(t, str):
            raise AlignmentError(f"{path}: malformed TextGrid (expected a string, got {t!r})")
        return t

    if len(tok) < 2 or tok[0] != "ooTextFile" or tok[1] != "TextGrid":
        raise AlignmentError(f"{path}: not a Praat TextGrid (missing 'ooTextFile' / 'TextGrid' header)")
    pos = 2
    take(float), take(float)  # xmin, xmax
    if take(str) != "<exists>":
        return []
    ntiers = int(take(float))
    tiers = []
    for _ in range(ntiers):
        kind, name = take(str), take(str)
        take(float), take(float)
        n = int(take(float))
        items = []
        if kind == "IntervalTier":
            for _ in range(n):
                a, b, lab = take(float), take(float), take(str)
                if b < a:
                    raise AlignmentError(f"{path}: tier {name!r}: interval {a}..{b} ends before it starts")
                items.append(Segment(a, b, lab))
        elif kind == "TextTier":
            for _ in range(n):
                items.append((take(float), take(str)))
        else:
            raise AlignmentError(f"{path}: unknown tier class {kind!r}")
        tiers.append(Tier(name, kind, items))
    return tiers


def phone_tier(tiers: Sequence[Tier], name: Optional[str] = None, path="") -> Tier:
    """The phone tier: the one named ``name``; else the first named like phones (MFA: "phones");
    else the only interval tier."""
    intervals = [t for t in tiers if t.kind == "IntervalTier"]
    if name is not None:
        for t in intervals:
            if t.name == name:
                return t
        raise AlignmentError(f"{path}: no interval tier named {name!r} (tiers: {[t.name for t in tiers]})")
    for t in intervals:
        if t.name.strip().lower() in PHONE_TIER_NAMES:
            return t
    if len(intervals) == 1:
        return intervals[0]
    raise AlignmentError(f"{path}: cannot tell which tier holds phones (tiers: {[t.name for t in tiers]}); "
                         f"name it with --phone-tier")


def read_alignment(path, *, file_rate: int, target_rate: int, tier: Optional[str] = None,
                   label_map: Optional[Callable[[str], Optional[str]]] = None) -> List[Segment]:
    """Segments of one utterance in samples at ``target_rate`` (integers, rounded).

    ``.PHN`` offsets are samples at ``file_rate`` (the audio file's rate); TextGrid times are seconds.
    Empty labels are dropped; ``label_map`` maps each label (``None`` drops it, ``KeyError`` =>
    :class:`AlignmentError`).
    """
    path = Path(path)
    if path.suffix.lower() == ".phn":
        raw = parse_phn(path)
        factor = target_rate / file_rate
    elif path.suffix.lower() == ".textgrid":
        raw = phone_tier(parse_textgrid(path), tier, path).items
        factor = float(target_rate)
    else:
        raise AlignmentError(f"{path}: unknown alignment format (expected .PHN or .TextGrid)")
    out = []
    for s in raw:
        lab = s.label.strip()
        if label_map is not None:
            try:
                lab = label_map(lab)
            except KeyError:
                raise AlignmentError(f"{path}: label {s.label!r} has no class in the phone folding") from None
        if not lab:
            continue
        a, b = int(round(s.start * factor)), int(round(s.end * factor))
        if b > a:
            out.append(Segment(a, b, lab))
    return out

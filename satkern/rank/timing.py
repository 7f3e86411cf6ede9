"""The forward-time columns of ``curves.csv``: every point timed by interleaved repeats.

One timing of one point on a loaded machine says little (issue 22 read 0.07 s unpruned, 0.31 s with 12
heads pruned, 0.013 s with all pruned: one sample each). So the points are timed after their probes,
together: ``rounds`` (k) rounds, each round times every point once, the order rotated from round to
round (round ``r`` starts at point ``r * n // k`` of the ``n`` points), after one untimed warm-up
forward; a burst of load then touches every point about equally instead of one point's only sample.

Per point: ``forward_s_per_audio_s`` is the median of the k samples, ``forward_s_per_audio_s_min`` the
smallest, ``forward_spread`` = (max - min) / median (NaN when k = 1: one sample has no spread),
``timing_rounds`` = k, ``attention_share`` the median of its k samples.

:data:`WIDE_SPREAD` and :func:`readable_speedup` state when a speed-up can be read between two points
(the report uses them).
"""
from __future__ import annotations

import statistics
from typing import Callable, Dict, List, Optional, Sequence, Tuple

TIMING_COLUMNS = ["forward_s_per_audio_s", "forward_s_per_audio_s_min", "forward_spread", "timing_rounds",
                  "attention_share"]
DEFAULT_ROUNDS = 5
# a point whose (max - min) / median over its k rounds exceeds this is "wide": the machine's load moved its
# time by more than 20 %, so a speed-up of that size or smaller cannot be read from it
WIDE_SPREAD = 0.2


def check_rounds(rounds) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"must be a positive int (timing rounds per point); got {rounds!r}")
    return rounds


def rotation(n: int, rounds: int, r: int) -> List[int]:
    """The point indices of round ``r``: ``0..n-1`` rotated to start at ``r * n // rounds``."""
    start = (r * n) // rounds if n else 0
    return [(start + i) % n for i in range(n)]


def summarize(samples: Sequence[Tuple[float, float]]) -> Dict[str, float]:
    """The timing columns of one point from its k samples ``(forward_s_per_audio_s, attention_share)``."""
    fwd = [float(s[0]) for s in samples]
    share = [float(s[1]) for s in samples]
    med = statistics.median(fwd)
    spread = (max(fwd) - min(fwd)) / med if len(fwd) > 1 and med > 0 else float("nan")
    return {"forward_s_per_audio_s": med, "forward_s_per_audio_s_min": min(fwd), "forward_spread": spread,
            "timing_rounds": len(fwd), "attention_share": statistics.median(share)}


def interleaved_timing(points: Dict[str, dict], time_point: Callable[[dict], Tuple[float, float]], rounds: int,
                       *, on_sample: Optional[Callable[[], None]] = None) -> Dict[str, Dict[str, float]]:
    """``{key: timing columns}`` for ``points`` (``{key: patch kwargs}``, in evaluation order).

    ``time_point(kwargs)`` times one forward of one point and returns ``(forward_s_per_audio_s,
    attention_share)``; it is called once untimed (the first point, warm-up), then ``rounds`` times per
    point in rotating order. ``on_sample()`` after every timed sample (a progress bar)."""
    check_rounds(rounds)
    keys = list(points)
    if not keys:
        return {}
    time_point(points[keys[0]])  # warm-up: allocator, caches, lazy initialization; not recorded
    samples: Dict[str, List[Tuple[float, float]]] = {k: [] for k in keys}
    for r in range(rounds):
        for i in rotation(len(keys), rounds, r):
            samples[keys[i]].append(time_point(points[keys[i]]))
            if on_sample is not None:
                on_sample()
    return {k: summarize(s) for k, s in samples.items()}


def is_wide(spread: float) -> bool:
    """A spread too wide to read a speed-up from (NaN, one sample, counts as wide)."""
    return not (spread == spread) or spread > WIDE_SPREAD


def readable_speedup(median_a: float, spread_a: float, median_b: float, spread_b: float) -> bool:
    """Whether the ratio of two points' medians can be read as a speed-up: both spreads at most
    :data:`WIDE_SPREAD` and the ratio further from 1 than either point's spread."""
    if is_wide(spread_a) or is_wide(spread_b) or not (median_a > 0 and median_b > 0):
        return False
    return abs(median_a / median_b - 1.0) > max(spread_a, spread_b)


__all__ = ["TIMING_COLUMNS", "DEFAULT_ROUNDS", "WIDE_SPREAD", "check_rounds", "rotation", "summarize",
           "interleaved_timing", "is_wide", "readable_speedup"]

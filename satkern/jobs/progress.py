"""Progress of a corpus job in audio seconds (and attention frames), with an ETA, and one line before
a very long input.

The bar's unit is a second of audio (its total: the durations known from discovery), so its ETA
weighs a 60 s recording sixty times a 1 s one, which counting utterances does not. Attention compute
grows as T^2, so before an input of more than :data:`LONG_INPUT_FRAMES` attention frames in one layer
the job prints one line with its frames and the time it should take::

    satkern analyze: long input: a.wav 95.0 s, 4749 frames per layer, estimated 41 s

The estimate comes from the batches measured so far (:class:`RateModel`: compute seconds fitted as
``c1 * sum(T) + c2 * sum(T^2)``); before two different batch shapes are measured it says
``no estimate yet`` or, from a rate measured on shorter inputs only, ``at least``.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

# Attention frames (one layer, one chunk) above which an input is announced. At 4096 frames one head's
# T x T scores are 16.8 M entries (64 MiB in float32) per layer, and the T^2 attention work outgrows
# the linear layers of a base-size SAT (d = 768: ~12 d^2 T multiply-adds per layer against ~2 d T^2,
# equal at T = 6 d = 4608); for wav2vec2 / HuBERT (20 ms frames) 4096 frames are 82 s of audio.
LONG_INPUT_FRAMES = 4096


class RateModel:
    """Compute seconds of a batch as ``c1 * sum(T) + c2 * sum(T^2)`` over its inputs' attention frames
    ``T``, least-squares fitted to the batches measured so far."""

    def __init__(self):
        self.rows: List[Tuple[float, float, float]] = []  # (sum T, sum T^2, seconds)
        self.longest = 0

    def observe(self, frames: Sequence[int], seconds: float) -> None:
        frames = [int(t) for t in frames if t > 0]
        if not frames or not seconds > 0:
            return
        self.rows.append((float(sum(frames)), float(sum(t * t for t in frames)), float(seconds)))
        self.longest = max(self.longest, max(frames))

    def estimate(self, frames: int) -> Tuple[Optional[float], bool]:
        """``(seconds, lower_bound)``: the predicted compute time of one input of ``frames`` attention
        frames, ``None`` before anything was measured; ``lower_bound`` when only a linear rate is known
        and ``frames`` is longer than every input measured (T^2 makes it take longer)."""
        if not self.rows:
            return None, False
        a = np.array([[r[0], r[1]] for r in self.rows])
        t = np.array([r[2] for r in self.rows])
        if len(self.rows) >= 2:
            scale = a.max(0)  # columns of similar size for the fit
            coef, _, rank, _ = np.linalg.lstsq(a / scale, t, rcond=None)
            coef = coef / scale
            if rank == 2 and (coef >= 0).all():
                return float(coef[0] * frames + coef[1] * frames * frames), False
        linear = float(t.sum() / a[:, 0].sum())
        return linear * frames, frames > self.longest


def describe_estimate(estimate: Tuple[Optional[float], bool]) -> str:
    seconds, lower = estimate
    if seconds is None:
        return "no estimate yet"
    shown = f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}"
    return f"estimated at least {shown} s (at the rate of shorter inputs)" if lower else f"estimated {shown} s"


class AudioProgress:
    """One job step's progress over audio: a tqdm bar in audio seconds when ``enabled`` (frames and
    real-time factor in its postfix), the long-input line (always, through ``log``), and the rate
    model behind both. Call :meth:`before` with the inputs of a batch just before computing it and
    :meth:`after` once it is done."""

    def __init__(self, desc: str, total_seconds: float, *, enabled: bool, log: Callable[[str], None],
                 prefix: str = "", long_frames: Optional[int] = None):
        self.desc = desc
        self.log = log
        self.prefix = prefix
        self.long_frames = int(LONG_INPUT_FRAMES if long_frames is None else long_frames)
        self.rate = RateModel()
        self.seconds = 0.0  # audio done
        self.frames = 0  # attention frames (one layer) done
        self.compute_s = 0.0
        self._t0: Optional[float] = None
        self._batch: List[int] = []
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=float(total_seconds), unit="s", desc=desc, dynamic_ncols=True,
                            file=sys.stderr,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s of audio "
                                       "[{elapsed}<{remaining}{postfix}]")

    def say(self, line: str) -> None:
        """A line to the job's log that does not tear the bar."""
        if self.bar is not None:
            from tqdm import tqdm

            with tqdm.external_write_mode(file=sys.stderr):
                self.log(line)
        else:
            self.log(line)

    def before(self, inputs: Sequence[Tuple[str, float, int, int]]) -> None:
        """A batch is about to run: ``inputs`` are ``(path, seconds, frames, chunks)`` per utterance
        (``frames`` per layer, run in ``chunks`` pieces); long ones are announced."""
        self._batch = []
        for path, seconds, frames, chunks in inputs:
            chunks = max(1, int(chunks))
            longest = math.ceil(int(frames) / chunks)  # torch.chunk's piece
            self._batch.append(longest)
            if longest > self.long_frames:
                how = f" (in {chunks} chunks of at most {longest})" if chunks > 1 else ""
                self.say(f"{self.prefix}long input: {Path(str(path)).name} {seconds:.1f} s, {int(frames)} frames "
                         f"per layer{how}, {describe_estimate(self.rate.estimate(longest))}")
        self._t0 = time.perf_counter()

    def after(self, seconds: float) -> None:
        """The batch started by :meth:`before` is done; it held ``seconds`` of audio."""
        if self._t0 is not None:
            dt = time.perf_counter() - self._t0
            self.compute_s += dt
            self.rate.observe(self._batch, dt)
        self.frames += sum(self._batch)
        self.seconds += float(seconds)
        self._t0 = None
        if self.bar is not None:
            if self.bar.n + seconds > self.bar.total:  # decoded audio a little longer than its header said
                self.bar.total = self.bar.n + seconds
            self.bar.update(float(seconds))
            speed = self.seconds / self.compute_s if self.compute_s > 0 else float("nan")
            self.bar.set_postfix_str(f"{self.frames} frames, {speed:.1f}x real time", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


__all__ = ["AudioProgress", "RateModel", "LONG_INPUT_FRAMES", "describe_estimate"]

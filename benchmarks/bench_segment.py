"""Benchmark of satkern.segment.boundaries against a straightforward loop implementation.

    python benchmarks/bench_segment.py [--T 1000] [--reps 7] [--loop-reps 2] [--out benchmarks/results]

Input: T frames of T-dim attention rows (a block-diagonal attention map: softmax of scores that are
high inside phone-like blocks of 3-12 frames, plus noise), the case of issue 11 (T = 1000; target
<= 60 ms, >= 20x the loop). Variants, timed side by side in one run (rounds interleaved):

* ``satkern`` -- :func:`satkern.segment.boundaries` (float32 rows, the dtype of the job's maps; and
  float64);
* ``loop`` -- the definitions of METRICS.md written as loops over frames: per frame ``i`` its
  distances to every frame (numpy over the feature axis), the row threshold, the run of
  ``K[i, k] > eps_i`` grown outward from the diagonal one frame at a time, ``S[t]`` summed over
  ``k`` one term at a time, then the plateau scan. Its boundaries are checked equal to satkern's.

Writes ``<out>/segment-cpu-<date>-t<threads>.md`` and ``.json`` (device, versions, commit, load average).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from bench_cpu import machine_info, summarize, time_side_by_side  # noqa: E402

from satkern.segment import boundaries  # noqa: E402

TARGET_MS = 60.0  # issue 11: boundaries for T = 1000 at most 60 ms on the 2-core CPU
TARGET_SPEEDUP = 20.0  # ... and at least 20x the loop implementation
ALPHA, BETA, HOP = 0.02, 1.0, 0.01


def attention_rows(T: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """A block-diagonal attention map [T, T]: phone-like blocks of 3-12 frames attend mostly inside."""
    g = torch.Generator().manual_seed(seed)
    sizes = []
    while sum(sizes) < T:
        sizes.append(int(torch.randint(3, 13, (1,), generator=g)))
    block = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))[:T]
    scores = 4.0 * (block[:, None] == block[None, :]).to(torch.float64) + torch.randn(T, T, generator=g,
                                                                                        dtype=torch.float64)
    return torch.softmax(scores, dim=-1).to(dtype)


def loop_boundaries(v: np.ndarray, alpha: float, beta: float, hop: float):
    T = v.shape[0]
    K = np.empty((T, T), dtype=np.float64)
    for i in range(T):
        K[i] = np.exp(-np.sqrt(((v - v[i]) ** 2).sum(axis=1)) / alpha)
    eps = [beta * K[i].sum() / T for i in range(T)]
    lo, hi = [0] * T, [0] * T  # Kf[i, j] = 1 for lo[i] <= j <= hi[i]
    for i in range(T):
        if not K[i, i] > eps[i]:
            lo[i], hi[i] = i + 1, i  # empty
            continue
        j = i
        while j + 1 < T and K[i, j + 1] > eps[i]:
            j += 1
        hi[i] = j
        j = i
        while j - 1 >= 0 and K[i, j - 1] > eps[i]:
            j -= 1
        lo[i] = j
    S = []
    for t in range(T):
        s = 0
        for k in range(-min(t, T - 1 - t), min(t, T - 1 - t) + 1):
            i, j = t - k, t + k
            s += lo[i] <= j <= hi[i]
        S.append(s)
    out, a = [], 0
    while a < T:
        b = a
        while b + 1 < T and S[b + 1] == S[a]:
            b += 1
        if 0 < a and b < T - 1 and S[a - 1] > S[a] and S[b + 1] > S[b]:
            out.append((a + b + 1) / 2 * hop)
        a = b + 1
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--loop-reps", type=int, default=2, help="rounds of the (slow) loop implementation")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine_info()
    v32 = attention_rows(args.T)
    v64 = v32.to(torch.float64)
    ours = boundaries(v32, ALPHA, BETA, HOP)
    ours64 = boundaries(v64, ALPHA, BETA, HOP)
    ref = loop_boundaries(v64.numpy(), ALPHA, BETA, HOP)
    agree64 = ours64.tolist() == ref
    agree32 = ours.numel() == len(ref) and bool(np.allclose(ours.numpy(), ref))
    fast = time_side_by_side({"satkern float32": lambda: boundaries(v32, ALPHA, BETA, HOP),
                              "satkern float64": lambda: boundaries(v64, ALPHA, BETA, HOP)}, args.reps, args.warmup)
    slow = time_side_by_side({"loop (float64)": lambda: loop_boundaries(v64.numpy(), ALPHA, BETA, HOP),
                              "satkern float32 (beside the loop)": lambda: boundaries(v32, ALPHA, BETA, HOP)},
                             args.loop_reps, 0)
    res = {k: summarize(t) for k, t in {**fast, **slow}.items()}
    loop_ms = res["loop (float64)"]["median_ms"]
    rows = []
    for name, r in res.items():
        note = ""
        if name == "satkern float32":
            note = (f"target <= {TARGET_MS:.0f} ms: {'met' if r['median_ms'] <= TARGET_MS else 'NOT met'}; "
                    f"loop/satkern = {loop_ms / r['median_ms']:.1f} (target >= {TARGET_SPEEDUP:.0f}; cpu "
                    f"{res['loop (float64)']['cpu_median_ms'] / r['cpu_median_ms']:.1f})")
        elif name == "satkern float64":
            note = f"loop/satkern = {loop_ms / r['median_ms']:.1f}"
        rows.append((name, r, note))
    lines = [f"# satkern.segment.boundaries benchmark ({info['date']})", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
             f"python {info['python']}, commit {info['commit']}, load avg at start {info['load_avg_1min_at_start']:.2f}",
             "",
             f"T = {args.T} frames of {args.T}-dim attention rows (block-diagonal map), alpha = {ALPHA}, beta = {BETA}; "
             f"{len(ours)} boundaries. satkern: median of {args.reps} rounds after {args.warmup} warm-up; loop: "
             f"{args.loop_reps} rounds interleaved with satkern. Loop boundaries equal satkern float64: {agree64}; "
             f"float32: {agree32}.", "",
             "| variant | median ms | p10-p90 ms | CPU ms | note |", "|---|---:|---:|---:|---|"]
    for name, r, note in rows:
        lines.append(f"| {name} | {r['median_ms']:.1f} | {r['p10_ms']:.1f}-{r['p90_ms']:.1f} | "
                     f"{r['cpu_median_ms']:.1f} | {note} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S") + f"-t{args.threads}"
    (out / f"segment-cpu-{stamp}.md").write_text(text)
    (out / f"segment-cpu-{stamp}.json").write_text(json.dumps(
        {"machine": info, "T": args.T, "alpha": ALPHA, "beta": BETA, "boundaries": len(ours),
         "loop_equals_float64": agree64, "loop_equals_float32": agree32, "results": res}, indent=2) + "\n")
    return 0 if agree64 else 1


if __name__ == "__main__":
    sys.exit(main())

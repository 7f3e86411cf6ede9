"""``satkern demo-op``: the attention op alone, on inputs shaped like one HuBERT-base layer.

HuBERT-base: 12 heads of 64 dims over 50 frames per second of 16 kHz audio. A few utterances of
different lengths are padded into one batch; the demo prints the per-head G/V/D/W table (mean over
utterances) and the time against eager attention (materialize the maps, then compute the same
statistics with torch ops). Inputs are random, not a trained model's.
"""
from __future__ import annotations

import argparse
import time

import torch

import satkern

NAME = "demo-op"
HELP = "the attention op alone on HuBERT-base-shaped inputs, timed against eager attention"
DESCRIPTION = ("Run satkern.attention with all four statistics on random inputs shaped like one HuBERT-base layer "
               "(12 heads x 64 dims, 50 frames per second, a padded batch of utterances), print each head's G, V, D, "
               "W and category, and time it against eager attention plus torch statistics.")
FRAMES_PER_SECOND = 50  # 16 kHz audio, conv feature extractor stride 320 samples


def eager_attention_with_stats(q, k, v, lengths):
    """The usual way: the full T x T maps in memory, statistics from them with torch ops."""
    B, H, T, D = q.shape
    idx = torch.arange(T)
    valid = idx[None, :] < lengths[:, None]
    s = (q @ k.transpose(-1, -2)) * D ** -0.5
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    A = torch.softmax(s, -1).masked_fill(~valid[:, None, :, None], 0.0)
    out = A @ v
    entropy = -torch.special.xlogy(A, A).sum(-1)
    distance = (A * (idx[:, None] - idx[None, :]).abs().to(A.dtype)).sum(-1)
    colmass = A.sum(-2)
    maxweight = A.amax(-1)
    return out, entropy, distance, colmass, maxweight


def _time(fn, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--seconds", type=float, nargs="+", default=[3.0, 7.5, 12.0],
                    help="utterance durations (default: 3.0 7.5 12.0)")
    ap.add_argument("--backend", default="auto",
                    help="satkern attention backend: auto, reference, cpu, triton, cuda (default auto)")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats; the best is reported (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")


def build_parser() -> argparse.ArgumentParser:
    """This command's parser on its own (``satkern.cli`` adds the same arguments to its sub-command)."""
    ap = argparse.ArgumentParser(prog=f"satkern {NAME}", description=DESCRIPTION)
    add_arguments(ap)
    return ap


def run(args) -> int:
    torch.manual_seed(args.seed)
    lengths = torch.tensor([int(round(s * FRAMES_PER_SECOND)) for s in args.seconds])
    B, H, T, D = len(lengths), 12, int(lengths.max()), 64
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    stats = satkern.STAT_NAMES

    res = satkern.attention(q, k, v, lengths=lengths, stats=stats, backend=args.backend)
    m = satkern.head_metrics(res)
    print(f"satkern demo-op: B={B} utterances of {', '.join(f'{s:g}' for s in args.seconds)} s "
          f"(T={lengths.tolist()} frames), H={H}, D={D}, float32, backend={res.backend!r}")
    print("inputs are RANDOM (shaped like a HuBERT-base layer), so heads look alike\n")
    cats = satkern.categorize(m.G.mean(0), m.V.mean(0), m.D.mean(0))
    print(f"{'head':>4} {'G':>8} {'V':>8} {'D':>8} {'W':>8}  category")
    for h in range(H):
        print(f"{h:>4} {m.G[:, h].mean():8.4f} {m.V[:, h].mean():8.4f} {m.D[:, h].mean():8.4f} "
              f"{m.W[:, h].mean():8.4f}  {cats[h]}")

    t_sat = _time(lambda: satkern.attention(q, k, v, lengths=lengths, stats=stats, backend=args.backend),
                  args.repeats)
    t_eager = _time(lambda: eager_attention_with_stats(q, k, v, lengths), args.repeats)
    print(f"\ntime (best of {args.repeats}, {torch.get_num_threads()} threads): satkern {t_sat * 1e3:.1f} ms, "
          f"eager + torch statistics {t_eager * 1e3:.1f} ms, ratio eager/satkern = {t_eager / t_sat:.2f}x")
    return 0

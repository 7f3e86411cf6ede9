"""Head pruning pays: a patched model's forward with half of its heads pruned against unpruned.

Model: an s3prl Mockingjay-shaped transformer with random weights (``mockingjay-base``: 3 layers,
hidden 768, 12 heads, no frame stacking; ``--model`` takes any built-in s3prl name or checkpoint),
on one batch of utterances of equal length (no padding, so no padded-row work either way).
Variants, both through ``satkern.patch(model, stats=())`` (refinement only, no statistics):

  (a) unpruned;
  (b) half of every layer's heads pruned (heads 0, 2, 4, ... of each layer: ``prune={(l, h)}``).

Two times per forward: the whole model (prepared features -> last layer) and its attention part
(the time inside the layers' satkern attention calls, measured by an observer of the patch,
``satkern.rank.probes.AttentionTimer``; that is where a pruned head's work is skipped). Variants
run interleaved round-robin (one warm-up round, then ``--repeats`` rounds; medians), so a shared
machine's load falls on both alike. Prints the ratios side by side and writes
``benchmarks/results/prune-<device>-<date>.md``.

    python benchmarks/bench_prune.py                  # 4 utterances of 10 s (T = 1000 frames)
    python benchmarks/bench_prune.py --quick          # smoke check
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    import torch

    import satkern
    from satkern.provenance import git_commit as _git_commit, versions as _versions
    from satkern.models import load_model
    from satkern.rank.probes import AttentionTimer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mockingjay-base")
    ap.add_argument("--utterances", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of every utterance")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--quick", action="store_true", help="2 utterances of 2 s, 1 repeat")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/")
    args = ap.parse_args(argv)
    if args.quick:
        args.utterances, args.seconds, args.repeats = 2, 2.0, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sm = load_model(args.model)
    sm.model.eval()
    g = torch.Generator().manual_seed(1)
    n = int(args.seconds * sm.sample_rate)
    waves = [0.1 * torch.randn(n, generator=g) for _ in range(args.utterances)]  # fresh noise, never zeros
    with torch.no_grad():
        inputs, frames = sm.prepare(waves)
    with satkern.patch(sm, stats=()) as h:
        L, H = h.num_layers, h.num_heads
    half = {(l, hd) for l in range(L) for hd in range(0, H, 2)}
    variants = {"a": ("unpruned", None), "b": (f"{len(half)} of {L * H} heads pruned", half)}
    times = {k: {"model": [], "attention": []} for k in variants}

    def one(prune):
        timer = AttentionTimer()  # an observer of the patch: time inside the layers' attention calls
        with satkern.patch(sm, stats=(), prune=prune, backend=args.backend, observers=[timer]) as h:
            with torch.inference_mode():
                t0 = time.perf_counter()
                sm(inputs)
                total = time.perf_counter() - t0
        return total, timer.seconds, sorted(h.backends_used)

    used = set()
    for r in range(args.repeats + 1):  # round 0 is the warm-up
        for k, (_, prune) in variants.items():
            total, attn, b = one(prune)
            used.update(b)
            if r:
                times[k]["model"].append(total)
                times[k]["attention"].append(attn)
    med = {k: {s: statistics.median(v) for s, v in t.items()} for k, t in times.items()}
    device = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"
    audio = args.utterances * args.seconds
    lines = [
        f"# Head pruning on CPU: {args.model} (random weights), half the heads pruned vs unpruned",
        "",
        f"device: {device}; load average at start {os.getloadavg()[0]:.1f}; backend {sorted(used)}; "
        f"{args.utterances} utterances x {args.seconds:g} s = {audio:g} s of audio, T = {int(frames[0])} frames, "
        f"{L} layers x {H} heads; median of {args.repeats} interleaved rounds after one warm-up",
        f"versions: {_versions()}; commit {_git_commit()}",
        "",
        "| variant | attention part | whole model (features -> last layer) | attention share |",
        "|---|---:|---:|---:|",
    ]
    for k, (name, _) in variants.items():
        m = med[k]
        ra = med["a"]["attention"] / m["attention"]
        rm = med["a"]["model"] / m["model"]
        lines.append(f"| ({k}) {name} | {m['attention'] * 1e3:.1f} ms ({ra:.2f}x a) | {m['model'] * 1e3:.1f} ms "
                     f"({rm:.2f}x a) | {m['attention'] / m['model']:.0%} |")
    speed = med["a"]["attention"] / med["b"]["attention"]
    lines += ["", f"attention part: pruned is {speed:.2f}x faster than unpruned (target >= 1.7x); whole model "
                  f"{med['a']['model'] / med['b']['model']:.2f}x."]
    from results_file import publish

    publish("prune", lines, args.no_write, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

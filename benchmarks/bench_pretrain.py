"""Pre-training throughput: audio frames per second of `satkern pretrain`'s training step.

The step is the one `satkern pretrain` takes (s3prl's masking, the model, SpecHead, masked L1,
backward, gradient clipping, AdamW), on the sat-mini recipe's architecture (12 layers x 4 heads x 32,
hidden 128, FFN 256, downsample 3, C = 3, positional init), with the features of a corpus extracted
once before timing (as `satkern pretrain` does). Variants, interleaved round-robin (one untimed
warm-up round, then ``--rounds`` rounds of ``--steps`` steps each; medians), so a shared machine's
load falls on every variant alike:

  * ``--batch-seconds`` (padded audio seconds per batch; the shipped recipe uses 16),
  * ``--threads`` (torch threads),
  * ``--attention`` (``sdpa``: torch's scaled_dot_product_attention, the default; ``eager``: the
    materialized map),
  * ``--compile`` (``off``: as `satkern pretrain` runs; ``on``: the transformer and the head wrapped
    in ``torch.compile(dynamic=True)``, compiled in the untimed warm-up round; the position table is
    computed in the graph from the length, so one compile serves every batch length; slower than eager
    on the 2-core CPU VM, 0.81x: ``results/pretrain-cpu-20261207-1534.md``; when the table's size was
    computed in Python every new length recompiled, 0.57x: ``results/pretrain-cpu-20261207-1325.md``).

Throughput is counted in the model's input frames (10 ms log-mel frames before the downsampling,
unpadded, i.e. real audio) per second, and in audio seconds per second; the ratio column is against
the first variant. Writes ``benchmarks/results/pretrain-cpu-<date>.md``.

    python benchmarks/bench_pretrain.py --corpus /work/data/synth            # the recipe's corpus
    python benchmarks/bench_pretrain.py --corpus tests/fixtures/corpus --quick
"""
from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _ints(text: str, name: str):
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or min(vals) < 1:
        raise SystemExit(f"bench_pretrain: {name} must be a comma-separated list of positive integers; got {text!r}")
    return vals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="corpus with a TRAIN/ split (utterances are read from it)")
    ap.add_argument("--batch-seconds", default="16,32,64", help="padded audio seconds per batch (default 16,32,64)")
    ap.add_argument("--threads", default="1,2", help="torch threads (default 1,2)")
    ap.add_argument("--attention", default="sdpa", help="sdpa and/or eager (default sdpa)")
    ap.add_argument("--compile", default="off", help="off and/or on: torch.compile the model (default off)")
    ap.add_argument("--steps", type=int, default=8, help="steps per variant per round (default 8)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    ap.add_argument("--max-utterances", type=int, default=240, help="utterances read from TRAIN (default 240)")
    ap.add_argument("--quick", action="store_true", help="smoke check: 2 layers, 2 steps, 1 round")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/")
    args = ap.parse_args(argv)
    batch_seconds = _ints(args.batch_seconds, "--batch-seconds")
    threads = _ints(args.threads, "--threads")
    attention = [a.strip() for a in args.attention.split(",") if a.strip()]
    if not attention or any(a not in ("sdpa", "eager") for a in attention):
        raise SystemExit(f"bench_pretrain: --attention must be sdpa and/or eager; got {args.attention!r}")
    compiled = [c.strip() for c in args.compile.split(",") if c.strip()]
    if not compiled or any(c not in ("off", "on") for c in compiled):
        raise SystemExit(f"bench_pretrain: --compile must be off and/or on; got {args.compile!r}")
    if not os.path.isdir(os.path.join(args.corpus, "TRAIN")):
        raise SystemExit(f"bench_pretrain: --corpus {args.corpus}: no TRAIN/ split")
    if args.quick:
        args.steps, args.rounds = 2, 1

    import torch

    from satkern.pretrain import PretrainConfig, build_model
    from satkern.pretrain.data import collate, epoch_batches, extract_all, training_utterances
    from satkern.pretrain.train import _sdpa_attend, masked_l1, reconstruct
    from satkern.provenance import git_commit, versions

    load0 = os.getloadavg()[0]
    layers = 2 if args.quick else 12
    base = PretrainConfig(corpus=args.corpus, out="-", layers=layers, heads=4, hidden=128, ffn=256,
                          mask_consecutive=3, lr=5e-4, local_init_heads=2, local_init_gain=3.0,
                          local_init_shift=1, position_dims=32)
    torch.manual_seed(0)
    probe, _ = build_model(base)
    utts, _ = training_utterances(args.corpus, "TRAIN")
    feats, _ = extract_all(probe.features, utts[: args.max_utterances], base.downsample)
    hop_s = probe.features.hop_length / probe.features.sample_rate
    lengths_all = [int(f.shape[0]) for f in feats]

    variants = list(itertools.product(batch_seconds, threads, attention, compiled))
    state = {}
    for bs, th, att, comp in variants:
        torch.manual_seed(0)
        model, head = build_model(base)
        if att == "sdpa":  # as satkern pretrain sets it
            for m in model.attention_modules():
                m.attend = _sdpa_attend(m)
        model.train(), head.train()
        params = list(model.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=base.lr, weight_decay=base.weight_decay)
        batches = epoch_batches(lengths_all, max(1, int(round(bs / hop_s))), 0, 0)
        if comp == "on":  # same parameters; the wrappers compile on their first calls (the warm-up round)
            model, head = _compiled(torch, model), torch.compile(head, dynamic=True)
        state[(bs, th, att, comp)] = dict(model=model, head=head, params=params, opt=opt, batches=batches, pos=0,
                                    gen=torch.Generator().manual_seed(0), times=[], frames=[])

    def run(key, n):
        s = state[key]
        torch.set_num_threads(key[1])
        frames = 0
        t0 = time.perf_counter()
        for _ in range(n):
            x, lengths = collate(feats, s["batches"][s["pos"] % len(s["batches"])])
            s["pos"] += 1
            pred, target, label = reconstruct(s["model"], s["head"], x, lengths, base.mask_consecutive,
                                              base.mask_proportion, s["gen"], alter=True)
            loss = masked_l1(pred, target, label)
            s["opt"].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(s["params"], base.grad_clip)
            s["opt"].step()
            frames += int(lengths.sum())
        return time.perf_counter() - t0, frames

    for key in variants:  # warm-up round, untimed (compiles the compiled variants; a few shapes)
        run(key, 3 if key[3] == "on" else 1)
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for key in order:
            dt, fr = run(key, args.steps)
            state[key]["times"].append(dt)
            state[key]["frames"].append(fr)

    rows = []
    for key in variants:
        s = state[key]
        rates = [f / t for f, t in zip(s["frames"], s["times"])]  # 10 ms input frames / s
        rows.append((key, statistics.median(rates), min(rates), max(rates)))
    first = rows[0][1]
    load1 = os.getloadavg()[0]
    dev = f"cpu ({platform.machine()}, {os.cpu_count()} cores visible)"
    lines = [
        "# pretrain training-step throughput",
        "",
        f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; device {dev}; load average {load0:.2f} at start, "
        f"{load1:.2f} at end; commit {git_commit() or 'unknown'}; {versions()}",
        f"model: {layers} layers x 4 heads x 32 (the sat-mini recipe), corpus {args.corpus} TRAIN "
        f"({len(feats)} utterances); {args.rounds} rounds x {args.steps} steps per variant, interleaved",
        "",
        "| batch (padded s) | threads | attention | compile | input frames / s (median) | min | max | audio s / s "
        "| vs first |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for (bs, th, att, comp), med, lo, hi in rows:
        lines.append(f"| {bs} | {th} | {att} | {comp} | {med:,.0f} | {lo:,.0f} | {hi:,.0f} | {med * hop_s:,.1f} | "
                     f"{med / first:.2f}x |")
    from results_file import publish

    publish("pretrain", lines, args.no_write, args.quick)
    return 0


def _compiled(torch, model):
    """The transformer with its forward compiled (``dynamic=True``: each batch has its own length) and
    its attributes (``config``, ``features``, ...) still reachable as ``reconstruct`` expects."""
    model.forward = torch.compile(model.forward, dynamic=True)
    return model


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # nothing is written before the last round: say so, no traceback
        print("bench_pretrain: interrupted; no result written", file=sys.stderr)
        raise SystemExit(130)

"""CUDA backend vs Triton backend vs SDPA vs eager, side by side in one run (needs a CUDA GPU).

Shapes:
* the Triton issue's: B=8, H=12, D=64, T in 512..4096, bfloat16;
* short utterances (T <= 512, many utterances, ragged lengths): where the CUDA
  backend should beat Triton.

Variants timed per shape (median and p10/p90 over --reps runs, CUDA events):
* ``cuda-all``   satkern backend="cuda", every statistic (entropy, distance, colmass, maxweight)
* ``cuda-out``   satkern backend="cuda", no statistics (out + lse only)
* ``triton-all`` / ``triton-out``  the same through backend="triton" (if registered and available)
* ``sdpa``       torch.nn.functional.scaled_dot_product_attention (output only; lower bound)
* ``eager``      the usual way: materialize softmax(QK^T) and compute the statistics from it
* issue shapes only (full length), issue 22's contenders: ``sdpa-flash`` / ``sdpa-cudnn`` (SDPA pinned to one
  backend, output only), ``flex-aux`` (compiled flex_attention with ``AuxRequest(lse, max_scores)``) and
  ``flex-comp`` (the FlexAttention composite of every statistic, benchmarks/flex_composite.py, the fastest
  recipe whose statistics passed the check against the float64 reference and satkern's; the check runs before
  the timing, see bench_triton.py's composite mode); ratios cuda-all / each

Writes ``benchmarks/results/cuda-<gpu>-<date>.md`` (device, versions, commit, the
table with ratios cuda/triton) unless --no-write; prints the same table.

    python benchmarks/bench_cuda.py                # all shapes
    python benchmarks/bench_cuda.py --quick        # 2 shapes, few reps (smoke test)
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ISSUE_SHAPES = [(8, 12, T, 64) for T in (512, 1024, 2048, 4096, 8192)]
SHORT_SHAPES = [(128, 12, 128, 64), (64, 12, 256, 64), (32, 12, 384, 64), (32, 12, 512, 64), (16, 16, 512, 128)]
ALL_STATS = ("entropy", "distance", "colmass", "maxweight")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--reps", type=int, default=50, help="timed repetitions per variant (default 50)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs per variant (default 10)")
    ap.add_argument("--quick", action="store_true", help="two shapes, 10 reps: a smoke test")
    ap.add_argument("--shapes", default="all", choices=["all", "issue", "short"])
    ap.add_argument("--uniform", dest="ragged", action="store_false",
                    help="short-utterance shapes at full length (default: ragged lengths uniform in [T/2, T])")
    ap.add_argument("--no-eager", action="store_true", help="skip the eager baseline (memory-hungry at T=4096)")
    ap.add_argument("--no-flex", action="store_true", help="skip flex-aux and the FlexAttention composite")
    ap.add_argument("--plan", action="store_true",
                    help="print what would be measured and exit (no GPU needed; run_all.sh --dry-run uses it)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results/")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/cuda-<gpu>-<date>.md)")
    return ap.parse_args(argv)


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # not a checkout
        return "unknown"


def time_cuda(fn, reps, warmup):
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    pick = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return pick(0.5), pick(0.1), pick(0.9)


def eager(q, k, v, lengths):
    """The usual way: the full map, then statistics from it (fp32 softmax, as analysis code does)."""
    import torch

    B, H, T, D = q.shape
    idx = torch.arange(T, device=q.device)
    valid = idx[None, :] < lengths[:, None]
    s = torch.matmul(q, k.transpose(-1, -2)).float() * D ** -0.5
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    A = torch.softmax(s, -1) * valid[:, None, :, None]
    out = torch.matmul(A.to(q.dtype), v)
    ent = -torch.special.xlogy(A, A).sum(-1)
    dist = (A * (idx[:, None] - idx[None, :]).abs()).sum(-1)
    col = A.sum(-2)
    mw = A.amax(-1)
    return out, ent, dist, col, mw


def flex_contenders(q, k, v, res, args) -> str:
    """Fill ``res`` with sdpa-flash, sdpa-cudnn, flex-aux and flex-comp (the fastest composite recipe that passed
    its check against the float64 reference, timed after the check); returns " (recipe)" or " (none passed)"."""
    import torch

    import satkern
    from bench_triton import check_composite, make_composite, make_flex_aux, raise_recompile_limits, sdpa_backend

    raise_recompile_limits()
    for be in ("flash", "cudnn"):
        f = sdpa_backend(q, k, v, be)
        res[f"sdpa-{be}"] = time_cuda(f, args.reps, args.warmup) if f is not None else None
    try:
        fx = make_flex_aux(q, k, v)
        fx()
        res["flex-aux"] = time_cuda(fx, args.reps, args.warmup)
    except Exception as e:
        print(f"  flex-aux: failed ({type(e).__name__}: {e})", file=sys.stderr)
    sk = satkern.attention(q, k, v, stats=ALL_STATS, backend="cuda" if res.get("cuda-all") else "triton") \
        if (res.get("cuda-all") or res.get("triton-all")) else None
    best = None
    for recipe in ("values", "lse"):
        try:
            fn, how = make_composite(q, k, v, recipe)
            chk = check_composite(q, k, v, fn(), sk)
            print(f"  flex composite {recipe} ({how}): check {'ok' if chk['ok'] else 'FAILED: ' + chk['failures']}",
                  file=sys.stderr)
            if not chk["ok"]:
                continue
            t = time_cuda(fn, args.reps, args.warmup)
            if best is None or t[0] < best[1][0]:
                best = (recipe, t)
        except Exception as e:
            print(f"  flex composite {recipe}: failed ({type(e).__name__}: {e})", file=sys.stderr)
        torch.cuda.empty_cache()
    if best is None:
        res["flex-comp"] = None
        return " (none passed)"
    res["flex-comp"] = best[1]
    return f" ({best[0]})"


def main(argv=None):
    args = parse_args(argv)
    if args.plan:
        shapes = {"all": ISSUE_SHAPES + SHORT_SHAPES, "issue": ISSUE_SHAPES, "short": SHORT_SHAPES}[args.shapes]
        print(f"bench_cuda plan: {args.dtype}, shapes (B, H, T, D) {shapes[:2] if args.quick else shapes}, "
              f"{args.reps} reps; flex contenders {'off' if args.no_flex else 'on (issue shapes)'}")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("bench_cuda: needs a CUDA GPU (torch.cuda.is_available() is False); nothing measured", file=sys.stderr)
        return 2
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # flex_composite.py, bench_triton.py
    import satkern
    from satkern.ops import backends, validate

    dtype = getattr(torch, args.dtype)
    shapes = {"all": ISSUE_SHAPES + SHORT_SHAPES, "issue": ISSUE_SHAPES, "short": SHORT_SHAPES}[args.shapes]
    if args.quick:
        shapes = [ISSUE_SHAPES[0], SHORT_SHAPES[0]]
        args.reps, args.warmup = 10, 3

    dev = torch.cuda.get_device_name()
    try:
        import triton
        triton_version = triton.__version__
    except Exception:
        triton_version = "not importable"
    lines = [f"# CUDA backend benchmark, {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC", "",
             f"* device: {dev} (capability {'.'.join(map(str, torch.cuda.get_device_capability()))})",
             f"* torch {torch.__version__}, CUDA {torch.version.cuda}, triton {triton_version}, "
             f"satkern {satkern.__version__} @ {commit()}, python {platform.python_version()}",
             f"* dtype {args.dtype}; median (p10-p90) ms over {args.reps} runs after {args.warmup} warm-up; "
             "`-all` = every statistic, `-out` = out + lse only",
             "* short-utterance shapes have ragged lengths uniform in [T/2, T]" if args.ragged else "", "",
             f"* load average at start (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
             "* issue shapes: `flex-comp` = the fastest FlexAttention composite whose statistics passed the check "
             "(recipe in brackets); ratios are the other's time / cuda-all's (> 1: cuda-all faster)", "",
             "| B | H | T | D | cuda-all | cuda-out | triton-all | triton-out | sdpa | eager | cuda/triton (all) "
             "| sdpa-flash | sdpa-cudnn | flex-aux | flex-comp | flash/cuda-all | cudnn/cuda-all | flex-aux/cuda-all "
             "| flex-comp/cuda-all |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda r: "-" if r is None else f"{r[0]:.3f} ({r[1]:.3f}-{r[2]:.3f})"  # noqa: E731

    for (B, H, T, D) in shapes:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(B, H, T, D, device="cuda", generator=g).to(dtype) for _ in range(3))
        short = (B, H, T, D) in SHORT_SHAPES
        if short and args.ragged:
            lengths = torch.randint(T // 2, T + 1, (B,), device="cuda", generator=g)
        else:
            lengths = torch.full((B,), T, device="cuda", dtype=torch.int64)
        res = {}
        for name in ("cuda", "triton"):
            b = backends().get(name)
            for tag, stats in (("all", ALL_STATS), ("out", ())):
                key = f"{name}-{tag}"
                why = b.reasons(validate(q, k, v, lengths=lengths, stats=stats)) if b else ["not registered"]
                if why:
                    res[key] = None
                    print(f"  {key}: skipped ({'; '.join(why)})", file=sys.stderr)
                    continue
                res[key] = time_cuda(lambda: satkern.attention(q, k, v, lengths=lengths, stats=stats, backend=name),
                                     args.reps, args.warmup)
        mask = (torch.arange(T, device="cuda")[None, :] < lengths[:, None])[:, None, None, :]
        res["sdpa"] = time_cuda(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                                args.reps, args.warmup)
        res["eager"] = None
        if not args.no_eager:
            try:
                res["eager"] = time_cuda(lambda: eager(q, k, v, lengths), max(3, args.reps // 5), 2)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
        ratio = "-"
        if res.get("cuda-all") and res.get("triton-all"):
            ratio = f"{res['cuda-all'][0] / res['triton-all'][0]:.2f}"
        comp_recipe = ""
        if not short and not args.no_flex:
            comp_recipe = flex_contenders(q, k, v, res, args)

        def vs(key):
            return "-" if not (res.get(key) and res.get("cuda-all")) else f"{res[key][0] / res['cuda-all'][0]:.2f}"
        row = (f"| {B} | {H} | {T} | {D} | {fmt(res.get('cuda-all'))} | {fmt(res.get('cuda-out'))} | "
               f"{fmt(res.get('triton-all'))} | {fmt(res.get('triton-out'))} | {fmt(res['sdpa'])} | "
               f"{fmt(res['eager'])} | {ratio} | {fmt(res.get('sdpa-flash'))} | {fmt(res.get('sdpa-cudnn'))} | "
               f"{fmt(res.get('flex-aux'))} | {fmt(res.get('flex-comp'))}{comp_recipe} | {vs('sdpa-flash')} | "
               f"{vs('sdpa-cudnn')} | {vs('flex-aux')} | {vs('flex-comp')} |")
        print(row, flush=True)
        lines.append(row)
        del q, k, v
        torch.cuda.empty_cache()

    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        path = args.out or os.path.join(
            ROOT, "benchmarks", "results",
            f"cuda-{dev.replace(' ', '_').replace('/', '_')}-{datetime.datetime.utcnow():%Y%m%d}.md")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The triton backend against SDPA, flex_attention and eager PyTorch, side by side in one run (needs a GPU).

Shapes (issues 3, 22): B=8, H=12, D=64, T in {512, 1024, 2048, 4096, 8192}, bfloat16. Modes:

* ``out+lse``  : satkern triton, no statistics            vs SDPA (best of flash / cuDNN / efficient),
                 flex_attention (compiled, return_lse) and eager (materialize, softmax, A@V, logsumexp);
* ``stats``    : + entropy, distance, maxweight             (eager computes them from the materialized A);
* ``all``      : + colmass (second pass)                    (eager likewise);
* ``renorm32`` : renorm span r=32 (sliding window)          vs flex_attention with a sliding-window block
                 mask, and dense SDPA (no mask; the work the window saves);
* ``composite``: satkern triton with every statistic         vs SDPA flash and SDPA cuDNN (each backend its own
                 row, output only), compiled flex_attention with ``return_aux=AuxRequest(lse=True,
                 max_scores=True)``, and the full FlexAttention composite of every statistic
                 (benchmarks/flex_composite.py, both recipes, the whole composite under torch.compile).
                 Each composite statistic is checked before it is timed: against the float64 reference on
                 a slice (utterance 0, two heads) under the project's tolerance rule, and its largest
                 difference from satkern's on the whole batch is recorded; a recipe that fails is still
                 timed (one device run is scarce) but marked, and the verdict reads its ratio only from a
                 recipe that passed.

Reported per row: median time (triton.testing.do_bench, L2 flushed), TFLOP/s with the dense count
4*B*H*T^2*D for every row (also for windowed rows, so ratios are speedups), the fraction of the measured
bf16 matmul peak on this GPU, peak extra memory (above the inputs) and the ratios the issue targets.
Results go to ``benchmarks/results/triton-<gpu>-<date>.md`` with device, torch / triton versions and the
git commit.

    python benchmarks/bench_triton.py                      # full run (a few minutes incl. autotuning)
    python benchmarks/bench_triton.py --T 1024 --quick     # smoke run
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import subprocess
import sys
from typing import Callable, Dict, List, Optional

import torch

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

LOAD_AT_START = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
RUN_STAMP = _dt.datetime.now(_dt.timezone.utc)
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # flex_composite.py lives beside this script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

STAT_MODES = {"out+lse": (), "stats": ("entropy", "distance", "maxweight"),
              "all": ("entropy", "distance", "colmass", "maxweight")}
TARGETS = {"out+lse": 0.9, "stats": 0.85, "all": 0.6}  # x SDPA throughput


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--H", type=int, default=12)
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--T", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--span", type=int, default=32, help="window r of the renorm rows (|q-k| <= r)")
    ap.add_argument("--span-T", type=int, nargs="+", default=[4096], help="T values of the renorm rows")
    ap.add_argument("--modes", nargs="+", default=["out+lse", "stats", "all", "renorm32", "composite"],
                    choices=["out+lse", "stats", "all", "renorm32", "composite"])
    ap.add_argument("--recipes", nargs="+", default=["values", "lse"], choices=["values", "lse"],
                    help="FlexAttention composite recipes of the composite mode (benchmarks/flex_composite.py)")
    ap.add_argument("--warmup", type=int, default=25, help="do_bench warmup (ms)")
    ap.add_argument("--rep", type=int, default=100, help="do_bench repetition time (ms)")
    ap.add_argument("--eager-max-T", type=int, default=4096, help="skip eager above this T (memory)")
    ap.add_argument("--no-flex", action="store_true", help="skip flex_attention")
    ap.add_argument("--quick", action="store_true", help="short timings (warmup 5 ms, rep 20 ms)")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="time CUDA-graph replays (kernel time without Python/launch overhead) for every contender")
    ap.add_argument("--out-dir", default=os.path.join(_REPO, "benchmarks", "results"))
    ap.add_argument("--no-write", action="store_true", help="print only, write no results file")
    ap.add_argument("--plan", action="store_true",
                    help="print what would be measured and exit (no GPU needed; run_all.sh --dry-run uses it)")
    ap.add_argument("--tag", default="", help="added to the results file name (two runs in one minute, one folder)")
    args = ap.parse_args(argv)
    if args.quick:
        args.warmup, args.rep = 5, 20
    return args


# ----------------------------------------------------------------------------- measurement
def bench(fn: Callable, args) -> float:
    """Median milliseconds (L2 flushed between runs); with --cuda-graph the calls are replayed from a
    CUDA graph, which removes every contender's Python / launch overhead (matters at T=512)."""
    from triton.testing import do_bench, do_bench_cudagraph

    if args.cuda_graph:
        return float(do_bench_cudagraph(fn, rep=args.rep, return_mode="median"))
    return float(do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median"))


def peak_extra_mib(fn: Callable) -> float:
    """Peak memory allocated during one call, above what was allocated before it (MiB)."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak / 2 ** 20


def matmul_peak_tflops(dtype, args) -> float:
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    ms = bench(lambda: torch.matmul(a, b), args)
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


# ----------------------------------------------------------------------------- contenders
def make_triton(q, k, v, stats, span=None):
    import satkern

    def f():
        return satkern.attention(q, k, v, stats=stats, span=span, span_mode="renorm", backend="triton")

    return f


def best_sdpa(q, k, v, args):
    """(name, fn, ms) of the fastest SDPA backend that runs this shape."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    best = None
    for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                     ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
        def f(be=be):
            with sdpa_kernel([be]):
                return F.scaled_dot_product_attention(q, k, v)
        try:
            f()
            torch.cuda.synchronize()
        except Exception:  # backend not available for this shape / GPU / build
            continue
        ms = bench(f, args)
        if best is None or ms < best[2]:
            best = (name, f, ms)
    return best


_FLEX = {}


def make_flex(q, k, v, window: Optional[int] = None):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if "fn" not in _FLEX:
        _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    flex = _FLEX["fn"]
    block_mask = None
    if window is not None:
        def sliding(b, h, q_idx, kv_idx):
            return (q_idx - kv_idx).abs() <= window

        T = q.shape[-2]
        block_mask = create_block_mask(sliding, B=None, H=None, Q_LEN=T, KV_LEN=T, device="cuda")

    def f():
        return flex(q, k, v, block_mask=block_mask, return_lse=True)

    return f


def make_eager(q, k, v, stats):
    """Materialize the scores and A, then torch statistics (what a user would write)."""
    T = q.shape[-2]
    scale = q.shape[-1] ** -0.5

    def f():
        s = torch.matmul(q, k.transpose(-1, -2)).float() * scale
        lse = torch.logsumexp(s, -1)
        A = torch.softmax(s, -1)
        out = torch.matmul(A.to(q.dtype), v)
        res = [out, lse]
        if "entropy" in stats:
            res.append(-torch.special.xlogy(A, A).sum(-1))
        if "distance" in stats:
            idx = torch.arange(T, device=q.device)
            res.append((A * (idx[:, None] - idx[None, :]).abs()).sum(-1))
        if "maxweight" in stats:
            res.append(A.amax(-1))
        if "colmass" in stats:
            res.append(A.sum(-2))
        return res

    return f


def sdpa_backend(q, k, v, backend: str):
    """SDPA pinned to one backend ("flash" or "cudnn"), or None when it does not run this shape / GPU."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    be = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]

    def f():
        with sdpa_kernel([be]):
            return F.scaled_dot_product_attention(q, k, v)
    try:
        f()
        torch.cuda.synchronize()
    except Exception as e:  # backend not available for this shape / GPU / build
        print(f"SDPA {backend} unavailable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return None
    return f


def make_flex_aux(q, k, v):
    """Compiled flex_attention returning the output, lse and the row max of the scores (torch >= 2.9)."""
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    if "fn" not in _FLEX:
        _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    flex = _FLEX["fn"]

    def f():
        return flex(q, k, v, return_aux=AuxRequest(lse=True, max_scores=True))

    return f


def make_composite(q, k, v, recipe: str):
    """``(fn, how)``: every statistic composed from FlexAttention calls (benchmarks/flex_composite.py), the whole
    composite compiled (the flex calls fused, the elementwise epilogues too); if that fails to compile, the
    composite runs eagerly around compiled flex_attention calls (``how`` says which)."""
    from torch.nn.attention.flex_attention import flex_attention

    import flex_composite as fc

    masks = fc.composite_masks(q, None, recipe=recipe)  # depends on T only: built once, as a user caches it

    def composite(q, k, v):
        return fc.flex_statistics(q, k, v, masks, recipe=recipe, flex=flex_attention)

    try:
        whole = torch.compile(composite, dynamic=False)
        whole(q, k, v)
        torch.cuda.synchronize()
        return (lambda: whole(q, k, v)), "whole composite compiled"
    except Exception as e:
        print(f"composite {recipe}: torch.compile of the whole composite failed ({type(e).__name__}: "
              f"{str(e).splitlines()[0] if str(e) else ''}); compiled flex calls, eager epilogue")
    if "fn" not in _FLEX:
        _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    flex = _FLEX["fn"]

    def per_call():
        return fc.flex_statistics(q, k, v, masks, recipe=recipe, flex=flex)
    per_call()
    return per_call, "flex calls compiled, epilogue eager"


def check_composite(q, k, v, res, sk) -> Dict:
    """The composite's statistics against the float64 reference on a slice (utterance 0, two heads; the rows are
    independent) under the tolerance rule, and their largest difference from satkern's on the whole batch."""
    import flex_composite as fc
    from satkern.ops.testing import failures

    sl = (slice(0, 1), slice(0, 2))
    part = {n: t[sl] for n, t in res.items()}
    report = fc.check(q[sl], k[sl], v[sl], part)
    vs = {}
    for n in ("out", "lse") + fc.ALL_STATS:
        a, b = res.get(n), getattr(sk, n, None)
        if a is not None and b is not None:
            vs[n] = float((a.double() - b.double()).abs().max())
    worst = {n: (r.get("err"), r.get("bound")) for n, r in report.items() if "err" in r}
    return {"ok": not failures(report), "failures": failures(report), "worst": worst, "vs_satkern": vs}


def run_composite(q, k, v, T, args, add, rows):
    """The ``composite`` mode at one T: satkern (every statistic) vs SDPA flash, SDPA cuDNN, flex aux and the
    composite recipes, each composite checked before it is timed."""
    stats = STAT_MODES["all"]
    tri = make_triton(q, k, v, stats)
    sk = tri()
    t_ms = bench(tri, args)
    add("composite", T, "satkern triton (all stats)", t_ms, peak_extra_mib(tri))
    sat_row = rows[-1]
    for be in ("flash", "cudnn"):
        f = sdpa_backend(q, k, v, be)
        if f is not None:
            ms = bench(f, args)
            add("composite", T, f"SDPA {be} (output only)", ms, peak_extra_mib(f))
            sat_row[f"vs_sdpa_{be}"] = ms / t_ms
    if not args.no_flex:
        try:
            fx = make_flex_aux(q, k, v)
            fx()
            ms = bench(fx, args)
            add("composite", T, "flex_attention + AuxRequest(lse, max_scores)", ms, peak_extra_mib(fx))
            sat_row["vs_flex_aux"] = ms / t_ms
        except Exception as e:
            print(f"flex_attention with AuxRequest failed: {type(e).__name__}: {e}")
        for recipe in args.recipes:
            try:
                fn, how = make_composite(q, k, v, recipe)
                chk = check_composite(q, k, v, fn(), sk)
                print(f"composite {recipe} T={T}: check {'ok' if chk['ok'] else 'FAILED: ' + chk['failures']}; "
                      f"largest difference from satkern: "
                      + ", ".join(f"{n} {d:.2e}" for n, d in chk["vs_satkern"].items()))
                ms = bench(fn, args)
                add("composite", T, f"flex composite ({recipe}; {how})", ms, peak_extra_mib(fn),
                    note="check ok" if chk["ok"] else "CHECK FAILED: " + chk["failures"].replace("\n", "; "))
                rows[-1]["check"] = chk
                sat_row.setdefault("vs_composite", {})[recipe] = (ms / t_ms, chk["ok"])
            except Exception as e:
                print(f"flex composite {recipe} failed: {type(e).__name__}: {e}")
            torch.cuda.empty_cache()
    del sk


# ----------------------------------------------------------------------------- run
def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", _REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", _REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except Exception:
        return "unknown"


def raise_recompile_limits(n: int = 64) -> None:
    """Every T (and every composite recipe, every window) is its own static-shape compile of the same code; past
    dynamo's default limit (8) it would silently run the rest eagerly, so the limit is raised for the run."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(int(getattr(torch._dynamo.config, name)), n))


def run(args):
    import triton

    import satkern  # noqa: F401  (registers the triton backend)

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    B, H, D = args.B, args.H, args.D
    raise_recompile_limits()
    peak = matmul_peak_tflops(dtype, args)
    print(f"device {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}  "
          f"measured {args.dtype} matmul peak {peak:.0f} TFLOP/s")
    rows: List[Dict] = []

    def add(mode, T, name, ms, mem, ref_ms=None, note=""):
        flops = 4 * B * H * T * T * D
        tf = flops / (ms * 1e-3) / 1e12
        row = dict(mode=mode, T=T, impl=name, ms=ms, tflops=tf, peak_frac=tf / peak, mem_mib=mem,
                   vs_ref=(ref_ms / ms) if ref_ms else None, note=note)
        rows.append(row)
        print(f"{mode:9s} T={T:5d} {name:28s} {ms:8.3f} ms {tf:7.1f} TFLOP/s ({100 * tf / peak:4.1f}% of peak) "
              f"mem {mem:9.1f} MiB" + (f"  speedup vs {note}: {ref_ms / ms:5.2f}x" if ref_ms else ""))

    for T in args.T:
        gen = torch.Generator(device="cuda").manual_seed(T)
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dtype, generator=gen) for _ in range(3))
        if "composite" in args.modes:
            run_composite(q, k, v, T, args, add, rows)
            if not args.no_write:  # after every T: a run cut short keeps what it measured
                write_markdown(rows, peak, args)
        if not any(m in STAT_MODES for m in args.modes):
            del q, k, v
            continue
        sd = best_sdpa(q, k, v, args)
        for mode in [m for m in args.modes if m in STAT_MODES]:
            stats = STAT_MODES[mode]
            tri = make_triton(q, k, v, stats)
            tri()  # autotune + compile outside the timing
            t_ms = bench(tri, args)
            add(mode, T, "satkern triton", t_ms, peak_extra_mib(tri))
            if sd is not None:
                add(mode, T, f"SDPA ({sd[0]})", sd[2], peak_extra_mib(sd[1]))
                rows[-2]["vs_sdpa"] = sd[2] / t_ms
            if not args.no_flex and mode == "out+lse":
                try:
                    fx = make_flex(q, k, v)
                    fx()
                    add(mode, T, "flex_attention (compiled)", bench(fx, args), peak_extra_mib(fx))
                except Exception as e:
                    print(f"flex_attention failed: {type(e).__name__}: {e}")
            if T <= args.eager_max_T:
                try:
                    eg = make_eager(q, k, v, stats)
                    e_ms = bench(eg, args)
                    e_mem = peak_extra_mib(eg)
                    add(mode, T, "eager torch", e_ms, e_mem)
                    tri_row = next(r for r in rows
                                   if r["mode"] == mode and r["T"] == T and r["impl"] == "satkern triton")
                    tri_row["vs_eager"] = e_ms / tri_row["ms"]
                    tri_row["mem_frac_eager"] = tri_row["mem_mib"] / e_mem if e_mem else None
                except torch.cuda.OutOfMemoryError:
                    print(f"eager OOM at T={T}")
                torch.cuda.empty_cache()
        del q, k, v

    if "renorm32" in args.modes:
        for T in args.span_T:
            gen = torch.Generator(device="cuda").manual_seed(T + 1)
            q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dtype, generator=gen) for _ in range(3))
            tri = make_triton(q, k, v, (), span=args.span)
            tri()
            t_ms = bench(tri, args)
            add("renorm32", T, f"satkern triton renorm r={args.span}", t_ms, peak_extra_mib(tri))
            tri_row = rows[-1]
            if not args.no_flex:
                try:
                    fx = make_flex(q, k, v, window=args.span)
                    fx()
                    f_ms = bench(fx, args)
                    add("renorm32", T, f"flex sliding window r={args.span}", f_ms, peak_extra_mib(fx))
                    tri_row["vs_flex"] = f_ms / t_ms
                except Exception as e:
                    print(f"flex_attention (window) failed: {type(e).__name__}: {e}")
            sd = best_sdpa(q, k, v, args)
            if sd is not None:
                add("renorm32", T, f"dense SDPA ({sd[0]})", sd[2], peak_extra_mib(sd[1]))
                tri_row["vs_sdpa"] = sd[2] / t_ms
            del q, k, v
    return rows, peak


def verdicts(rows) -> List[str]:
    out = []
    for r in rows:
        if r["impl"] not in ("satkern triton", "satkern triton (all stats)") \
                and not r["impl"].startswith("satkern triton renorm"):
            continue
        m, T = r["mode"], r["T"]
        if m in TARGETS and r.get("vs_sdpa") is not None:
            ok = r["vs_sdpa"] >= TARGETS[m]
            out.append(f"{m} T={T}: {r['vs_sdpa']:.2f}x SDPA (target >= {TARGETS[m]}x) {'PASS' if ok else 'FAIL'}")
        if T == 2048 and r.get("vs_eager") is not None:
            ok = r["vs_eager"] >= 5 and (r.get("mem_frac_eager") or 1) <= 1 / 20
            out.append(f"{m} T=2048: {r['vs_eager']:.1f}x faster than eager, memory "
                       f"{r.get('mem_frac_eager', float('nan')):.3f} of eager (target >= 5x, <= 0.05) "
                       f"{'PASS' if ok else 'FAIL'}")
        if m == "composite" and r["impl"] == "satkern triton (all stats)":
            for be in ("flash", "cudnn"):
                if r.get(f"vs_sdpa_{be}") is not None:
                    out.append(f"composite T={T}: satkern with every statistic at {r[f'vs_sdpa_{be}']:.2f}x "
                               f"SDPA {be}'s throughput (SDPA computes the output only)")
            if r.get("vs_flex_aux") is not None:
                out.append(f"composite T={T}: {r['vs_flex_aux']:.2f}x flex_attention + AuxRequest(lse, max_scores)")
            comp = r.get("vs_composite") or {}
            passed = {k: x for k, (x, ok) in comp.items() if ok}
            for k, (x, ok) in comp.items():
                if not ok:
                    out.append(f"composite T={T}: the {k} recipe FAILED its check (its {x:.2f}x is not read)")
            if passed:
                k, x = min(passed.items(), key=lambda kv: kv[1])  # the fastest composite that passed
                out.append(f"composite T={T}: {x:.2f}x the fastest checked FlexAttention composite ({k} recipe) "
                           f"{'PASS' if x >= 1 else 'FAIL'} (target >= 1x)")
        if m == "renorm32":
            if r.get("vs_flex") is not None:
                out.append(f"renorm T={T}: {r['vs_flex']:.2f}x flex sliding window (target >= 1x) "
                           f"{'PASS' if r['vs_flex'] >= 1 else 'FAIL'}")
            if r.get("vs_sdpa") is not None:
                out.append(f"renorm T={T}: {r['vs_sdpa']:.2f}x dense SDPA (target >= 8x) "
                           f"{'PASS' if r['vs_sdpa'] >= 8 else 'FAIL'}")
    return out


def write_markdown(rows, peak, args) -> str:
    import triton

    gpu = torch.cuda.get_device_name()
    now = _dt.datetime.now(_dt.timezone.utc)
    lines = [f"# satkern triton backend benchmark: {gpu}", "",
             f"- date (UTC): {now:%Y-%m-%d %H:%M}",
             f"- device: {gpu}, compute capability {'.'.join(map(str, torch.cuda.get_device_capability()))}",
             f"- torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}",
             f"- git commit: {_git_commit()}",
             f"- load average at start (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in LOAD_AT_START)}",
             f"- shapes: B={args.B}, H={args.H}, D={args.D}, {args.dtype}; FLOPs counted as 4*B*H*T^2*D (dense) "
             f"for every row",
             f"- measured {args.dtype} matmul peak (8192^3): {peak:.0f} TFLOP/s",
             f"- timing: triton.testing.{'do_bench_cudagraph (graph replays)' if args.cuda_graph else 'do_bench'}, "
             f"median, end to end from Python (satkern.attention incl. validation and dispatch)",
             f"- command: `python benchmarks/bench_triton.py {' '.join(sys.argv[1:])}`", "",
             "| mode | T | implementation | ms | TFLOP/s | % of matmul peak | peak extra MiB |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['T']} | {r['impl']} | {r['ms']:.3f} | {r['tflops']:.1f} | "
                     f"{100 * r['peak_frac']:.1f} | {r['mem_mib']:.1f} |")
    checks = [r for r in rows if r.get("check")]
    if checks:
        lines += ["", "## Composite checks (before timing)", "",
                  "| T | implementation | check | worst error / bound per field | largest difference from satkern |",
                  "|---:|---|---|---|---|"]
        for r in checks:
            c = r["check"]
            worst = ", ".join(f"{n} {e:.1e}/{b:.1e}" for n, (e, b) in c["worst"].items())
            vs = ", ".join(f"{n} {d:.1e}" for n, d in c["vs_satkern"].items())
            lines.append(f"| {r['T']} | {r['impl']} | {'ok' if c['ok'] else 'FAILED'} | {worst} | {vs} |")
    lines += ["", "## Targets (issues 3, 22)", ""] + [f"- {v}" for v in verdicts(rows)] + [""]
    os.makedirs(args.out_dir, exist_ok=True)
    tag = f"{_slug(args.tag)}-" if args.tag else ""
    path = os.path.join(args.out_dir, f"triton-{tag}{_slug(gpu)}-{RUN_STAMP:%Y%m%d-%H%M}.md")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)  # atomic: rewritten after every T of the composite mode
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plan:
        print(f"bench_triton plan: B={args.B} H={args.H} D={args.D} {args.dtype}, T={args.T}, modes {args.modes}"
              + (f", composite recipes {args.recipes}" if "composite" in args.modes else "")
              + f"; {'no file' if args.no_write else 'results in ' + args.out_dir}")
        return 0
    if not torch.cuda.is_available():
        print("bench_triton.py needs a CUDA GPU (none found); nothing measured.", file=sys.stderr)
        return 2
    from satkern.ops.triton.backend import triton_error

    if triton_error():
        print(f"triton not importable: {triton_error()}", file=sys.stderr)
        return 2
    rows, peak = run(args)
    print("\n".join(["", "targets:"] + ["  " + v for v in verdicts(rows)]))
    if not args.no_write:
        print(f"wrote {write_markdown(rows, peak, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU backend vs SDPA vs eager vs flex_attention, side by side in one run (issue 2, "Performance").

CPU, float32, torch threads = cores, B=1, H=12, D=64:

* B in {1, 8} (--batches), T in {1024, 2048, 4096} (--Ts):
    ``satkern``  backend="cpu", stats = entropy, distance, colmass, maxweight
    ``satkern-ent-dist``  backend="cpu", stats = entropy, distance
    ``sdpa``     torch.nn.functional.scaled_dot_product_attention (no statistics; the floor)
    ``eager``    materialize softmax(QK^T) and compute the four statistics with torch ops (B=1 only:
                 at B=8, T=4096 its maps alone need > 6 GB each)
  targets (issue 22): satkern (all four) <= 1.0x sdpa, entropy + distance alone <= 0.95x, and
  >= 4x faster than eager.
* span_mode="renorm", span r=32 at T=4096 (all four statistics):
    ``satkern-renorm``  backend="cpu"
    ``flex``            torch.nn.attention.flex_attention under torch.compile, sliding-window block
                        mask |q-k| <= r (no statistics)
    ``sdpa-dense``      dense SDPA (what you pay without banding)
  target: satkern-renorm no slower than flex.
* peak memory at T=8192 above inputs and outputs, satkern all statistics (target < 200 MB).
  Method: each variant runs in a fresh subprocess. It imports torch, builds the inputs, runs the
  variant once at T=256 (loads kernels, starts the thread pool), then resets the kernel's peak-RSS
  counter (``echo 5 > /proc/self/clear_refs``, which resets VmHWM), reads VmRSS as the baseline,
  runs the variant once at T=8192 and reads VmHWM. Reported: VmHWM - baseline - bytes of the
  outputs it returned (inputs are in the baseline). Eager at T=8192 with 12 heads needs >10 GB,
  so by default eager is measured with H=1 and the table shows that figure x12 (marked "est.");
  --eager-full-memory measures it with all heads.

Timing: every round runs each variant once, in turn (so machine noise hits all of them alike),
after --warmup untimed rounds; the table shows the median wall time over --reps rounds, p10-p90,
the median process CPU time (all threads; robust on a shared machine), and the ratios. Writes benchmarks/results/cpu-<host>-<date>.{md,json} (machine: lscpu model, cores, torch
version, git commit) unless --no-write.

    python benchmarks/bench_cpu.py               # everything (a few minutes)
    python benchmarks/bench_cpu.py --quick       # smoke test: fewer reps, no flex compile
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ALL_STATS = ("entropy", "distance", "colmass", "maxweight")
B, H, D = 1, 12, 64


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--reps", type=int, default=10, help="timed rounds (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--quick", action="store_true", help="3 reps, 1 warm-up, no flex_attention")
    ap.add_argument("--Ts", default="1024,2048,4096", help="sequence lengths of the full-attention rows (default 1024,2048,4096)")
    ap.add_argument("--batches", default="1,8", help="batch sizes of the full-attention rows (default 1,8)")
    ap.add_argument("--no-flex", action="store_true", help="skip flex_attention (its compile takes a while)")
    ap.add_argument("--no-memory", action="store_true", help="skip the T=8192 memory measurement")
    ap.add_argument("--eager-full-memory", action="store_true",
                    help="measure eager's memory at T=8192 with all 12 heads (needs > 10 GB)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results/")
    ap.add_argument("--memory-child", nargs=2, metavar=("VARIANT", "HEADS"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------------------ variants

def make_inputs(T, heads=H, seed=0, batch=B):
    import torch
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, heads, T, D, generator=g) for _ in range(3))


def satkern_fn(q, k, v, stats=ALL_STATS, **kw):
    import satkern
    return lambda: satkern.attention(q, k, v, stats=stats, backend="cpu", **kw)


def sdpa_fn(q, k, v):
    import torch.nn.functional as F
    return lambda: F.scaled_dot_product_attention(q, k, v)


def eager_fn(q, k, v):
    """The usual way: the full map, then each statistic with torch ops (all T x T)."""
    import torch
    T = q.shape[-2]
    idx = torch.arange(T, dtype=q.dtype)
    absdiff = (idx[:, None] - idx[None, :]).abs()  # built once, outside the timed call
    scale = q.shape[-1] ** -0.5

    def run():
        s = torch.matmul(q, k.transpose(-1, -2)) * scale
        lse = torch.logsumexp(s, -1)
        A = torch.softmax(s, -1)
        out = A @ v
        entropy = -torch.special.xlogy(A, A).sum(-1)
        distance = (A * absdiff).sum(-1)
        colmass = A.sum(-2)
        maxweight = A.amax(-1)
        return out, lse, entropy, distance, colmass, maxweight
    return run


def flex_fn(q, k, v, r):
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def sliding_window(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= r

    T = q.shape[-2]
    block_mask = create_block_mask(sliding_window, B=None, H=None, Q_LEN=T, KV_LEN=T, device="cpu")
    compiled = torch.compile(flex_attention)
    return lambda: compiled(q, k, v, block_mask=block_mask)


# ------------------------------------------------------------------------------------------ timing

def time_side_by_side(variants, reps, warmup):
    """variants: name -> callable. Returns name -> (wall seconds, process CPU seconds), rounds interleaved.

    Process CPU time (all threads) is recorded too: on a busy shared machine wall time mostly
    measures the scheduler, while CPU time still compares the work each variant does.
    """
    times = {n: ([], []) for n in variants}
    for rnd in range(warmup + reps):
        for name, f in variants.items():
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if rnd >= warmup:
                times[name][0].append(dt)
                times[name][1].append(dc)
    return times


def summarize(tc):
    ts, cs = sorted(tc[0]), tc[1]
    q = lambda p: ts[min(len(ts) - 1, int(round(p * (len(ts) - 1))))]  # noqa: E731
    return {"median_ms": 1e3 * statistics.median(ts), "p10_ms": 1e3 * q(0.1), "p90_ms": 1e3 * q(0.9),
            "cpu_median_ms": 1e3 * statistics.median(cs), "n": len(ts)}


def ratio(a, b, key="median_ms"):
    return a[key] / b[key]


# ------------------------------------------------------------------------------------------ memory

def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB -> bytes
    raise RuntimeError(field)


def memory_child(variant, heads):
    """Runs in a fresh process; prints JSON with the peak above inputs and outputs."""
    import torch
    torch.set_num_threads(os.cpu_count())
    T = 8192

    def build(t, nh):
        q, k, v = make_inputs(t, heads=nh)
        if variant == "satkern":
            return (q, k, v), satkern_fn(q, k, v)
        if variant == "eager":
            return (q, k, v), eager_fn(q, k, v)
        if variant == "sdpa":
            return (q, k, v), sdpa_fn(q, k, v)
        raise ValueError(variant)

    _, warm = build(256, heads)
    warm()  # load the extension / kernels, start the thread pool
    inputs, f = build(T, heads)
    del warm
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    base = _status("VmRSS")
    res = f()
    peak = _status("VmHWM")
    tensors = [res] if isinstance(res, torch.Tensor) else list(res) if isinstance(res, tuple) else [
        getattr(res, n) for n in ("out", "lse") + ALL_STATS if getattr(res, n, None) is not None]
    out_bytes = sum(t.numel() * t.element_size() for t in tensors)
    in_bytes = sum(t.numel() * t.element_size() for t in inputs)
    print(json.dumps({"variant": variant, "heads": heads, "T": T, "peak_above_baseline_mb": (peak - base) / 2**20,
                      "output_mb": out_bytes / 2**20, "input_mb": in_bytes / 2**20,
                      "extra_mb": (peak - base - out_bytes) / 2**20}))


def measure_memory(variant, heads):
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", variant, str(heads)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        return {"variant": variant, "heads": heads, "error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ machine

def machine_info():
    import torch
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except Exception:
        commit = "unknown"
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "commit": commit,
            "host": platform.node(), "load_avg_1min_at_start": load,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


# ------------------------------------------------------------------------------------------ main

def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return 0
    import torch
    import satkern
    if args.quick:
        args.reps, args.warmup, args.no_flex = 3, 1, True
    torch.set_num_threads(args.threads or os.cpu_count())
    avail = satkern.availability()["cpu"]
    if avail != "available":
        print(f"satkern cpu backend not available: {avail}", file=sys.stderr)
        return 1
    info = machine_info()
    rows = []  # (section, name, summary, ratio text)
    results = {"machine": info, "config": {"B": args.batches, "Ts": args.Ts, "H": H, "D": D, "dtype": "float32", "reps": args.reps,
                                           "warmup": args.warmup}, "timings": {}, "memory": []}

    for batch in (int(x) for x in args.batches.split(",")):
        for T in (int(x) for x in args.Ts.split(",")):
            q, k, v = make_inputs(T, batch=batch)
            variants = {"satkern": satkern_fn(q, k, v), "satkern-ent-dist": satkern_fn(q, k, v, stats=("entropy", "distance")),
                        "sdpa": sdpa_fn(q, k, v)}
            if batch == 1:
                variants["eager"] = eager_fn(q, k, v)
            ts = time_side_by_side(variants, args.reps, args.warmup)
            summ = {n: summarize(t) for n, t in ts.items()}
            results["timings"][f"full B={batch} T={T}"] = summ
            sk, ed, sp = summ["satkern"], summ["satkern-ent-dist"], summ["sdpa"]
            sec = f"B={batch}, T={T}"
            rows.append((sec, "sdpa (no stats)", sp, "1.00"))
            rows.append((sec, "satkern cpu, all four stats", sk,
                         f"satkern/sdpa = {ratio(sk, sp):.3f} (cpu {ratio(sk, sp, 'cpu_median_ms'):.3f}; target <= 1.0)"))
            rows.append((sec, "satkern cpu, entropy + distance", ed,
                         f"satkern/sdpa = {ratio(ed, sp):.3f} (cpu {ratio(ed, sp, 'cpu_median_ms'):.3f}; target <= 0.95)"))
            if "eager" in summ:
                ea = summ["eager"]
                rows.append((sec, "eager (all four stats)", ea,
                             f"eager/satkern = {ratio(ea, sk):.2f} (cpu {ratio(ea, sk, 'cpu_median_ms'):.2f}; target >= 4)"))
            del q, k, v, variants

    T, r = 4096, 32
    q, k, v = make_inputs(T)
    variants = {"satkern-renorm": satkern_fn(q, k, v, span=r, span_mode="renorm"), "sdpa-dense": sdpa_fn(q, k, v)}
    flex_note = None
    if not args.no_flex:
        try:
            f = flex_fn(q, k, v, r)
            f()  # compile outside the timed rounds
            variants["flex"] = f
        except Exception as e:  # no compiler, or flex unsupported on this CPU build
            flex_note = f"flex_attention unavailable: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    ts = time_side_by_side(variants, args.reps, args.warmup)
    summ = {n: summarize(t) for n, t in ts.items()}
    results["timings"][f"renorm r={r} T={T}"] = summ
    sk = summ["satkern-renorm"]
    sec = f"T={T}, renorm r={r}"
    rows.append((sec, "satkern cpu renorm", sk, "1.00"))
    if "flex" in summ:
        rows.append((sec, "flex_attention (compiled, no stats)", summ["flex"],
                     f"flex/satkern = {ratio(summ['flex'], sk):.2f} (cpu {ratio(summ['flex'], sk, 'cpu_median_ms'):.2f}; "
                     f"target >= 1)"))
    rows.append((sec, "sdpa dense (no stats)", summ["sdpa-dense"],
                 f"sdpa/satkern = {ratio(summ['sdpa-dense'], sk):.2f} (cpu {ratio(summ['sdpa-dense'], sk, 'cpu_median_ms'):.2f})"))
    del q, k, v, variants

    mem_rows = []
    if not args.no_memory:
        for variant in ("satkern", "sdpa"):
            m = measure_memory(variant, H)
            results["memory"].append(m)
            mem_rows.append((variant, m, ""))
        eh = H if args.eager_full_memory else 1
        m = measure_memory("eager", eh)
        results["memory"].append(m)
        mem_rows.append(("eager", m, "" if eh == H else f"measured with H=1; x{H} est."))

    # ---- print
    lines = [f"# satkern CPU benchmark ({info['date']})", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
             f"({info['torch_threads']} threads), python {info['python']}, commit {info['commit']}, "
             f"load avg at start {info['load_avg_1min_at_start']:.2f}", "",
             f"float32, H={H}, D={D} (B as in each row; the renorm and memory rows B={B}); median of {args.reps} interleaved rounds (p10-p90) after "
             f"{args.warmup} warm-up rounds. Ratios use wall time; in brackets the same ratio in process CPU "
             f"time (all threads), which stays meaningful when the machine is shared.", "",
             "| case | variant | median ms | p10-p90 ms | CPU ms | ratio |", "|---|---|---:|---:|---:|---|"]
    for sec, name, sm, rtext in rows:
        lines.append(f"| {sec} | {name} | {sm['median_ms']:.1f} | {sm['p10_ms']:.1f}-{sm['p90_ms']:.1f} | "
                     f"{sm['cpu_median_ms']:.1f} | {rtext} |")
    if flex_note:
        lines += ["", flex_note]
    if mem_rows:
        lines += ["", "Peak memory at T=8192 above inputs and outputs (fresh process each; VmHWM after reset "
                  "minus VmRSS before the call minus output bytes):", "",
                  "| variant | extra MB | note |", "|---|---:|---|"]
        for name, m, note in mem_rows:
            if "error" in m:
                lines.append(f"| {name} | error | {m['error']} |")
                continue
            extra = m["extra_mb"]
            shown = f"{extra:.0f}" if m["heads"] == H else f"{extra * H / m['heads']:.0f} (est.)"
            target = " (target < 200)" if name == "satkern" else ""
            lines.append(f"| {name} | {shown} | {note}{target} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
        stem = os.path.join(ROOT, "benchmarks", "results",
                            f"cpu-{info['host'] or 'host'}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M}")
        with open(stem + ".md", "w") as f:
            f.write(text)
        with open(stem + ".json", "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

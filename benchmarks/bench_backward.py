"""satkern forward + backward vs SDPA forward + backward, side by side in one run (issue 10).

CPU (default), float32, torch threads = cores, B=1, H=12, D=64, T in {1024, 4096}:

* ``sdpa``           torch.nn.functional.scaled_dot_product_attention forward + backward (the floor)
* ``satkern``        satkern.attention(backend="cpu") forward + backward of out only
                     (target, issue 22: <= 1.0x sdpa)
* ``satkern-stats``  the same with entropy and distance asked for and in the loss, so their
                     gradients flow too (target, issue 22: <= 1.15x sdpa)

Each variant computes loss = sum(out * g) (+ sum(entropy * g_e) + sum(distance * g_d)) for fixed
random g and calls loss.backward() with q, k, v requiring grad. Rounds interleave the variants
(a shared machine's noise hits all alike); the table shows medians, p10-p90, process CPU time and
the ratios. Peak memory at T=8192 (fresh process per variant, as benchmarks/bench_cpu.py: VmHWM
after a reset minus VmRSS before the call, minus the bytes of the gradients it returns): satkern
out-only and with statistics, SDPA, and eager autograd through the materialized map (measured
with H=1 and shown x12; target for satkern: < 300 MB above inputs and outputs).

GPU (``--device cuda``, not run yet: there was no GPU where this was written): the Triton backend
forward + backward against SDPA's, bfloat16, B=8, H=12, D=64, T in {1024, 2048, 4096}.

Writes benchmarks/results/backward-<device>-<date>.{md,json} unless --no-write.

    python benchmarks/bench_backward.py                # CPU, everything
    python benchmarks/bench_backward.py --quick        # 3 rounds, T=1024 only, no memory
    python benchmarks/bench_backward.py --device cuda  # GPU part
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_cpu import _status, machine_info, ratio, summarize  # noqa: E402

D = 64


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--reps", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--quick", action="store_true", help="3 reps, T=1024 only, no memory")
    ap.add_argument("--no-memory", action="store_true", help="skip the T=8192 memory measurement")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results/")
    ap.add_argument("--memory-child", nargs=2, metavar=("VARIANT", "HEADS"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def make_inputs(B, H, T, dtype, device, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    qkv = [torch.randn(B, H, T, D, generator=g).to(device=device, dtype=dtype).requires_grad_() for _ in range(3)]
    grads = {"out": torch.randn(B, H, T, D, generator=g).to(device=device, dtype=dtype),
             "entropy": torch.randn(B, H, T, generator=g).to(device),
             "distance": torch.randn(B, H, T, generator=g).to(device) / T}
    return qkv, grads


def variant_fn(name, qkv, grads, backend):
    """A callable running one forward + backward; returns the gradients (q, k, v)."""
    import torch
    import torch.nn.functional as F
    import satkern
    q, k, v = qkv

    def clear():
        for x in qkv:
            x.grad = None

    if name == "sdpa":
        def run():
            clear()
            out = F.scaled_dot_product_attention(q, k, v)
            out.backward(grads["out"])
            return q.grad, k.grad, v.grad
    elif name in ("satkern", "satkern-stats"):
        stats = ("entropy", "distance") if name == "satkern-stats" else ()

        def run():
            clear()
            res = satkern.attention(q, k, v, stats=stats, backend=backend)
            loss = (res.out * grads["out"]).sum()
            for s in stats:
                loss = loss + (getattr(res, s) * grads[s]).sum()
            loss.backward()
            return q.grad, k.grad, v.grad
    elif name == "eager":  # autograd through the materialized map (what you get without a fused backward)
        def run():
            clear()
            s = torch.matmul(q, k.transpose(-1, -2)) * D ** -0.5
            a = torch.softmax(s, -1)
            out = torch.matmul(a, v)
            ent = -(a * torch.log(a.clamp_min(1e-30))).sum(-1)
            loss = (out * grads["out"]).sum() + (ent * grads["entropy"]).sum()
            loss.backward()
            return q.grad, k.grad, v.grad
    else:
        raise ValueError(name)
    return run


def time_side_by_side(variants, reps, warmup, sync):
    times = {n: ([], []) for n in variants}
    for rnd in range(warmup + reps):
        for name, f in variants.items():
            sync()
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            sync()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if rnd >= warmup:
                times[name][0].append(dt)
                times[name][1].append(dc)
    return times


def memory_child(variant, heads):
    """Fresh process: peak RSS of one forward + backward at T=8192 above inputs, minus the gradients' bytes."""
    import torch
    torch.set_num_threads(os.cpu_count())
    name = variant
    warm_qkv, warm_g = make_inputs(1, heads, 256, torch.float32, "cpu")
    variant_fn(name, warm_qkv, warm_g, "cpu")()  # load kernels, start the thread pool
    qkv, grads = make_inputs(1, heads, 8192, torch.float32, "cpu")
    f = variant_fn(name, qkv, grads, "cpu")
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    base = _status("VmRSS")
    gq, gk, gv = f()
    peak = _status("VmHWM")
    grad_bytes = sum(t.numel() * t.element_size() for t in (gq, gk, gv))
    print(json.dumps({"variant": variant, "heads": heads, "T": 8192, "peak_above_baseline_mb": (peak - base) / 2**20,
                      "grad_mb": grad_bytes / 2**20, "extra_mb": (peak - base - grad_bytes) / 2**20}))


def measure_memory(variant, heads):
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", variant, str(heads)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        return {"variant": variant, "heads": heads, "error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return 0
    import torch
    import satkern
    if args.quick:
        args.reps, args.warmup, args.no_memory = 3, 1, True
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("bench_backward: --device cuda needs a CUDA GPU; none is available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads or os.cpu_count())
    backend = "triton" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    B, H = (8, 12) if cuda else (1, 12)
    lengths = ((1024, 2048, 4096) if cuda else (1024, 4096)) if not args.quick else (1024,)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    info = machine_info()
    if cuda:
        info["gpu"] = torch.cuda.get_device_name()
    results = {"machine": info, "config": {"device": args.device, "backend": backend, "B": B, "H": H, "D": D,
                                           "dtype": str(dtype), "reps": args.reps, "warmup": args.warmup},
               "timings": {}, "memory": []}
    rows = []
    for T in lengths:
        qkv, grads = make_inputs(B, H, T, dtype, args.device)
        variants = {n: variant_fn(n, qkv, grads, backend) for n in ("sdpa", "satkern", "satkern-stats")}
        ts = time_side_by_side(variants, args.reps, args.warmup, sync)
        summ = {n: summarize(t) for n, t in ts.items()}
        results["timings"][f"T={T}"] = summ
        sp, sk, ss = summ["sdpa"], summ["satkern"], summ["satkern-stats"]
        rows.append((T, "sdpa fwd+bwd", sp, "1.00"))
        rows.append((T, f"satkern {backend} fwd+bwd (out)", sk,
                     f"satkern/sdpa = {ratio(sk, sp):.3f} (cpu {ratio(sk, sp, 'cpu_median_ms'):.3f}; target <= 1.0)"))
        rows.append((T, f"satkern {backend} fwd+bwd (out + entropy + distance)", ss,
                     f"satkern/sdpa = {ratio(ss, sp):.3f} (cpu {ratio(ss, sp, 'cpu_median_ms'):.3f}; target <= 1.15)"))
        del qkv, grads, variants

    mem_rows = []
    if not args.no_memory and not cuda:
        for variant, heads in (("satkern", H), ("satkern-stats", H), ("sdpa", H), ("eager", 1)):
            m = measure_memory(variant, heads)
            results["memory"].append(m)
            mem_rows.append((variant, m))

    where = info.get("gpu", info["cpu"])
    lines = [f"# satkern forward + backward benchmark ({info['date']})", "",
             f"Device: {where}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
             f"python {info['python']}, commit {info['commit']}, load avg at start {info['load_avg_1min_at_start']:.2f}",
             "", f"{dtype}, B={B}, H={H}, D={D}; median of {args.reps} interleaved rounds (p10-p90) after "
             f"{args.warmup} warm-up round(s). Ratios use wall time; in brackets the same ratio in process CPU time "
             f"(all threads).", "",
             "| T | variant | median ms | p10-p90 ms | CPU ms | ratio |", "|---|---|---:|---:|---:|---|"]
    for T, name, sm, rtext in rows:
        lines.append(f"| {T} | {name} | {sm['median_ms']:.1f} | {sm['p10_ms']:.1f}-{sm['p90_ms']:.1f} | "
                     f"{sm['cpu_median_ms']:.1f} | {rtext} |")
    if mem_rows:
        lines += ["", "Peak memory of one forward + backward at T=8192 above the inputs, minus the gradients' bytes "
                  "(fresh process each):", "", "| variant | extra MB | note |", "|---|---:|---|"]
        for name, m in mem_rows:
            if "error" in m:
                lines.append(f"| {name} | error | {m['error']} |")
                continue
            shown = f"{m['extra_mb']:.0f}" if m["heads"] == H else f"{m['extra_mb'] * H / m['heads']:.0f} (est.)"
            note = "target < 300" if name.startswith("satkern") else (
                f"measured with H={m['heads']}, x{H}" if m["heads"] != H else "")
            lines.append(f"| {name} | {shown} | {note} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
        base = os.path.join(HERE, "results", f"backward-{args.device}-{stamp}")
        for ext, payload in (("md", text), ("json", json.dumps(results, indent=1) + "\n")):
            tmp = f"{base}.{ext}.tmp"
            with open(tmp, "w") as f:
                f.write(payload)
            os.replace(tmp, f"{base}.{ext}")
        print(f"wrote {base}.md / .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Python (host) overhead of one ``satkern.attention`` call, before and after, side by side in one run.

"Before" is another revision of the package (default: ``main``), extracted with ``git archive`` into a
temporary folder and given this tree's compiled ``satkern/_C`` (the CPU kernel sources must be the same:
checked with ``git diff``); "after" is this working tree. Each is timed in its own child process, in
interleaved rounds (before, after, before, after, ...), and the median over rounds is printed.

What is timed, per call, on tiny CPU tensors (B=2, H=4, T=8, D=16, so the kernel itself costs little):

* ``validate``           : the argument contract alone (lengths and head_mask given, all statistics);
* ``validate+select``    : plus choosing the backend;
* ``attention(cpu)``     : the whole public call with the ``cpu`` backend (contract, dispatch, op, result).

On a CPU a value read of a CPU tensor is cheap, so this measures the Python cost only. What the change
removes on a GPU, a host wait for the device on every call (every layer), cannot be measured here; that is
what tests/test_host_sync.py proves absent (the call runs on ``meta`` tensors).

    python benchmarks/bench_overhead.py                 # before = main
    python benchmarks/bench_overhead.py --before HEAD~3 --rounds 9 --calls 2000
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import satkern
from satkern.ops.contract import validate
from satkern.ops.dispatch import select
B, H, T, D = 2, 4, 8, 16
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
kw = dict(lengths=torch.tensor([8, 5]), head_mask=torch.tensor([1, 0, 1, 1]), stats=satkern.STAT_NAMES)
n = int(sys.argv[1])
def per_call(fn):
    for _ in range(min(n, 200)):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6
res = {
    "validate": per_call(lambda: validate(q, k, v, **kw)),
    "validate+select": per_call(lambda: select(validate(q, k, v, **kw))),
    "attention(cpu)": per_call(lambda: satkern.attention(q, k, v, backend="cpu", **kw)),
}
print(json.dumps(res))
"""


def _git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _extract(rev: str, dest: str) -> None:
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    built = [f for f in os.listdir(os.path.join(ROOT, "satkern")) if f.startswith("_C") and f.endswith(".so")]
    if not built:
        raise SystemExit("bench_overhead: build the extension in this tree first (setup.py build_ext --inplace)")
    changed = _git("diff", "--name-only", rev, "--", "csrc/cpu", "csrc/module.cpp")
    if changed:
        raise SystemExit(f"bench_overhead: the CPU kernel differs between {rev} and this tree ({changed}); "
                         f"build {rev} itself to compare")
    for f in built:
        shutil.copy2(os.path.join(ROOT, "satkern", f), os.path.join(dest, "satkern", f))


def _run(tree: str, calls: int) -> dict:
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(calls)], cwd=tree, env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_overhead: child in {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="main", help="git revision timed as 'before' (default main)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds per tree (median reported)")
    ap.add_argument("--calls", type=int, default=2000, help="timed calls per round")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        print("bench_overhead: --rounds and --calls must be >= 1", file=sys.stderr)
        return 2
    before_commit = _git("rev-parse", "--short", args.before)
    after_commit = _git("rev-parse", "--short", "HEAD") + ("+dirty" if _git("status", "--porcelain", "satkern") else "")
    runs = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        _extract(args.before, tmp)
        for _ in range(args.rounds):
            runs["before"].append(_run(tmp, args.calls))
            runs["after"].append(_run(ROOT, args.calls))
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"host overhead per call (us), median of {args.rounds} interleaved rounds x {args.calls} calls; "
          f"{cpu}, {os.cpu_count()} cores, 1 torch thread, torch {torch.__version__}, Python "
          f"{platform.python_version()}")
    print(f"before = {args.before} ({before_commit}), after = this tree ({after_commit})")
    print(f"{'case':<18} {'before':>10} {'after':>10} {'after/before':>13}")
    table = {}
    for case in runs["before"][0]:
        b = statistics.median(r[case] for r in runs["before"])
        a = statistics.median(r[case] for r in runs["after"])
        table[case] = {"before_us": round(b, 2), "after_us": round(a, 2), "ratio": round(a / b, 3)}
        print(f"{case:<18} {b:>10.1f} {a:>10.1f} {a / b:>12.2f}x")
    if args.json:
        payload = {"version": 1, "device": cpu, "torch": torch.__version__, "before": f"{args.before} ({before_commit})",
                   "after": after_commit, "rounds": args.rounds, "calls": args.calls, "results": table}
        tmpf = args.json + ".tmp"
        with open(tmpf, "w") as f:
            json.dump(payload, f, indent=1)
        os.replace(tmpf, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

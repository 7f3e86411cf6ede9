"""The bookkeeping of tests/gpu/run_all.sh: one state file, one results pair ``gpu-<date>.md`` / ``.json``.

    gpu_report.py --init STATE                 device, driver, versions, commit -> STATE (JSON)
    gpu_report.py --step STATE NAME RC T0 T1 LOG CMD   record one step (status, seconds, log tail)
    gpu_report.py --write STATE WORK PREFIX    PREFIX.json and PREFIX.md (+ the benchmark tables in WORK)
    gpu_report.py --self-test WORK             the three above on made-up steps, no GPU needed (--dry-run)

Every write is atomic (temp file + os.replace), so an interrupted run keeps the steps it finished.
Not a test module (pytest does not collect it: no ``test_`` prefix).
"""
from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERSION = 1
TAIL_CHARS = 4000  # of each step's log kept in the JSON


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _cmd(*args) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(gpu: bool = True) -> dict:
    """Device, driver and versions (the GPU fields only with ``gpu``)."""
    import torch

    env = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "commit": _cmd("git", "rev-parse", "HEAD"),
           "dirty": bool(_cmd("git", "status", "--porcelain", "--untracked-files=no")),
           "started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")}
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception as e:  # not installed or broken: say so
        env["triton"] = f"unavailable ({type(e).__name__})"
    if gpu and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                   memory_gib=round(p.total_memory / 2 ** 30, 1), sm_count=p.multi_processor_count,
                   driver=_cmd("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"),
                   nvcc=_cmd("nvcc", "--version").splitlines()[-1:] or [""])
        env["nvcc"] = env["nvcc"][0] if isinstance(env["nvcc"], list) else env["nvcc"]
    return env


def init(state_path: str, gpu: bool = True) -> None:
    _atomic_write(state_path, json.dumps({"version": VERSION, "environment": environment(gpu), "steps": []}, indent=1))


def step(state_path: str, name: str, rc: int, t0: float, t1: float, log: str, cmd: str) -> None:
    state = _load(state_path)
    text = ""
    if os.path.exists(log):
        with open(log, errors="replace") as f:
            text = f.read()
    status = "ok" if rc == 0 else ("timeout" if rc in (124, 137) else f"failed (exit {rc})")
    state["steps"].append({"name": name, "status": status, "exit": rc, "seconds": round(t1 - t0, 1), "command": cmd,
                           "log_tail": text[-TAIL_CHARS:]})
    _atomic_write(state_path, json.dumps(state, indent=1))


def write(state_path: str, work: str, prefix: str) -> None:
    state = _load(state_path)
    tables = {}
    for path in sorted(glob.glob(os.path.join(work, "*.md"))):
        with open(path, errors="replace") as f:
            tables[os.path.basename(path)] = f.read()
    state["benchmark_tables"] = tables
    aot = [s for s in state["steps"] if s["name"] == "aot" and s["status"] == "ok"]
    if aot:
        text = aot[0]["log_tail"]
        start = text.find("[")
        try:
            state["aot_check"] = json.loads(text[start:]) if start >= 0 else None
        except ValueError:
            state["aot_check"] = None  # log tail cut the JSON: the full log is not kept
    _atomic_write(prefix + ".json", json.dumps(state, indent=1))
    env = state["environment"]
    lines = [f"# GPU check {env.get('started_utc', '')} UTC", "",
             f"device: {env.get('device', 'none')} (cc {env.get('capability', '?')}, {env.get('memory_gib', '?')} GiB, "
             f"{env.get('sm_count', '?')} SMs), driver {env.get('driver', '?')}; torch {env['torch']} (CUDA "
             f"{env.get('torch_cuda')}), triton {env.get('triton')}, {env.get('nvcc', '')}; commit "
             f"{env.get('commit', '?')[:12]}{' (dirty)' if env.get('dirty') else ''}", "",
             "Produced by `bash tests/gpu/run_all.sh`.", "",
             "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']} |" for s in state["steps"]]
    for s in state["steps"]:
        if s["status"] != "ok":
            lines += ["", f"## {s['name']}: {s['status']}", "", "```", s["log_tail"][-1500:], "```"]
    for name, text in tables.items():
        lines += ["", f"## {name}", "", text]
    _atomic_write(prefix + ".md", "\n".join(lines) + "\n")


def self_test(work: str) -> int:
    """--dry-run: the bookkeeping end to end on made-up steps (checks the files it writes)."""
    state = os.path.join(work, "selftest_state.json")
    init(state, gpu=False)
    log = os.path.join(work, "selftest.log")
    _atomic_write(log, "1 passed\n")
    step(state, "example_ok", 0, 0.0, 1.5, log, "true")
    step(state, "example_timeout", 124, 0.0, 2.0, log, "sleep 99")
    _atomic_write(os.path.join(work, "example-table.md"), "| a | b |\n|---|---|\n| 1 | 2 |\n")
    write(state, work, os.path.join(work, "gpu-selftest"))
    got = _load(os.path.join(work, "gpu-selftest.json"))
    md = open(os.path.join(work, "gpu-selftest.md")).read()
    ok = (got["version"] == VERSION and [s["status"] for s in got["steps"]] == ["ok", "timeout"]
          and "example-table.md" in got["benchmark_tables"] and "| example_timeout | timeout | 2.0 |" in md
          and got["environment"]["torch"])
    print("gpu_report self-test: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


def main(argv) -> int:
    if len(argv) >= 2 and argv[0] == "--init":
        init(argv[1])
    elif len(argv) >= 8 and argv[0] == "--step":
        step(argv[1], argv[2], int(argv[3]), float(argv[4]), float(argv[5]), argv[6], argv[7])
    elif len(argv) >= 4 and argv[0] == "--write":
        write(argv[1], argv[2], argv[3])
    elif len(argv) >= 2 and argv[0] == "--self-test":
        return self_test(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

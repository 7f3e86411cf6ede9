"""Long recordings through a transformers model: peak memory and wall time, feature encoder whole vs in pieces.

For each length (default 1, 4 and 8 minutes of 16 kHz audio: the fixture corpus's speech joined and
tiled to length) and each mode, a fresh child process builds the model (random weights from its
config; default ``hubert-base``), prepares the recording and runs one patched forward with all four
statistics, as ``satkern analyze`` runs an utterance (``satkern.patch`` + ``SpeechModel``):

  before: the feature encoder runs on the whole recording (``feature_encoder_chunk_frames = 0``);
  after:  the feature encoder runs in pieces (``satkern.models.feature_encoder``, the default).

Reported per run: wall seconds of prepare + forward (model construction excluded), peak resident
memory of the child (``VmHWM`` from /proc/self/status; ru_maxrss elsewhere), its resident memory
after the model was built, and on CUDA the peak allocated device memory. The two modes' last hidden
states are checked equal (max abs difference). Writes ``benchmarks/results/<name>.json`` and ``.md``
with the device, torch version, commit and the load average at the start (other work on the
machine skews the timings).

    python benchmarks/bench_long_audio.py                      # 1, 4, 8 min through hubert-base, before and after
    python benchmarks/bench_long_audio.py --minutes 8 --modes after
    python benchmarks/bench_long_audio.py --quick              # smoke check: tiny-hubert-base, 6 s, nothing written
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

LOAD_AT_START = os.getloadavg()[0]

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "corpus"
RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_RATE = 16000
MODES = {"before": 0, "after": None}  # feature_encoder_chunk_frames: 0 = whole, None = the model's default


def _memory_kib(field: str) -> int:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process in KiB; ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB on Linux


def speech(num_samples: int):
    """``num_samples`` of 16 kHz speech: the fixture corpus's recordings joined, tiled to length."""
    import numpy as np
    import soundfile as sf

    clips = [sf.read(str(p), dtype="float32")[0] for p in sorted(FIXTURE.rglob("*.WAV"))]
    joined = np.concatenate(clips)
    reps = -(-num_samples // len(joined))
    return np.tile(joined, reps)[:num_samples]


def child(args) -> dict:
    """One run (one length, one mode) in this process; returns its record."""
    sys.path.insert(0, str(ROOT))
    import torch

    import satkern
    from satkern.models import load_model

    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device)
    torch.manual_seed(0)  # the same random weights in every child, so the modes' outputs can be compared
    sm = load_model(args.model)
    sm.model.to(device).eval()
    chunk = MODES[args.mode] if MODES[args.mode] is not None else args.chunk_frames
    if chunk is not None:
        sm.feature_encoder_chunk_frames = chunk
    wave = torch.from_numpy(speech(int(round(args.minutes * 60 * SAMPLE_RATE))))
    rss_loaded = _memory_kib("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    with torch.inference_mode(), satkern.patch(sm, stats=satkern.STAT_NAMES) as h:
        inputs, frames = sm.prepare([wave])
        out = sm(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    last = out.last_hidden_state[0].float().cpu()
    rec = {"minutes": args.minutes, "mode": args.mode, "frames": int(frames[0]), "wall_s": round(wall, 3),
           "peak_rss_mib": round(_memory_kib("VmHWM") / 1024, 1), "rss_after_load_mib": round(rss_loaded / 1024, 1),
           "feature_encoder": sm.describe().get("feature_encoder", {}).get("mode"),
           "G_mean": float(h.metrics.G.double().mean())}
    if device.type == "cuda":
        rec["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if args.hidden_out:
        torch.save(last, args.hidden_out)
    return rec


def _git(*a) -> str:
    try:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _markdown(table) -> list:
    """Lines of a markdown table of a DataFrame (pandas' to_markdown needs tabulate)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join("" if (isinstance(v, float) and v != v) else str(v) for v in row) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 4.0, 8.0], help="recording lengths (default 1 4 8)")
    ap.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["before", "after"],
                    help="before: feature encoder whole; after: in pieces (default both)")
    ap.add_argument("--model", default=None, help="built-in name or model folder (default hubert-base; "
                                                   "tiny-hubert-base with --quick)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each child (default: torch's)")
    ap.add_argument("--chunk-frames", type=int, default=None,
                    help="frames per piece in the 'after' mode (default: the model's, 1024; 64 with --quick)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per child run (default 3600)")
    ap.add_argument("--name", default=None, help="results file name (default long-audio-<device>-<date>)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: tiny-hubert-base, 0.1 min, pieces of 64 frames, nothing written")
    ap.add_argument("--out-dir", default=None, help="write the results here instead of benchmarks/results")
    # internal: one run in a child process
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    ap.add_argument("--hidden-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.minutes = args.minutes[0]
        print(json.dumps(child(args)))
        return 0
    if args.quick:
        args.minutes = [0.1]
        args.chunk_frames = args.chunk_frames or 64
    args.model = args.model or ("tiny-hubert-base" if args.quick else "hubert-base")
    bad = [m for m in args.minutes if not m > 0]
    if bad:
        ap.error(f"--minutes: expected lengths > 0; got {bad}")
    if args.chunk_frames is not None and args.chunk_frames < 1:
        ap.error(f"--chunk-frames: expected a number of frames >= 1; got {args.chunk_frames}")

    import tempfile

    import pandas as pd
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            hidden = {}
            for mode in args.modes:
                hidden[mode] = os.path.join(tmp, f"{minutes}-{mode}.pt")
                cmd = [sys.executable, os.path.abspath(__file__), "--child", "--mode", mode, "--minutes", str(minutes),
                       "--model", args.model, "--device", args.device, "--threads", str(args.threads),
                       "--hidden-out", hidden[mode]]
                if args.chunk_frames:
                    cmd += ["--chunk-frames", str(args.chunk_frames)]
                print(f"{minutes:g} min, {mode} ...", flush=True)
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    rows.append({"minutes": minutes, "mode": mode, "error": f"timed out after {args.timeout:g} s"})
                    continue
                if done.returncode != 0:
                    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                    rows.append({"minutes": minutes, "mode": mode, "error": f"exit {done.returncode}: {tail}"})
                    continue
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if len(args.modes) == 2 and all(os.path.exists(p) for p in hidden.values()):
                a, b = (torch.load(hidden[m]) for m in ("before", "after"))
                diff = float((a - b).abs().max()) if a.shape == b.shape else float("nan")
                for r in rows[-2:]:
                    r["hidden_max_abs_diff"] = diff
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if args.quick and not args.out_dir:
        return 0 if "error" not in table or table["error"].isna().all() else 1

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M")
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    name = args.name or f"long-audio-{dev}-{stamp}"
    commit = _git("rev-parse", "--short", "HEAD")
    if _git("status", "--porcelain", "satkern") not in ("", "unknown"):
        commit += "+dirty"
    payload = {"version": 1, "benchmark": "bench_long_audio", "model": args.model, "device": _device_name(args.device),
               "torch": torch.__version__, "commit": commit, "load_average_at_start": LOAD_AT_START,
               "threads": args.threads or torch.get_num_threads(), "date": stamp, "runs": rows}
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    md = [f"# Long recordings through {args.model}: feature encoder whole (before) vs in pieces (after)", "",
          f"device {payload['device']}, torch {payload['torch']}, commit {commit}, "
          f"load average at start {LOAD_AT_START:.2f}, {payload['threads']} torch threads; "
          "one fresh process per run; peak RSS = VmHWM of that process", "",
          *_markdown(table), ""]
    (out_dir / f"{name}.md").write_text("\n".join(md))
    print(f"wrote {out_dir / name}.json and .md")
    return 0 if "error" not in table or table["error"].isna().all() else 1


if __name__ == "__main__":
    sys.exit(main())

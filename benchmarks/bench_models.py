"""HuBERT-base (random weights) end to end: plain SDPA vs satkern-patched vs eager + torch statistics.

Three variants on the same batch (8 utterances of 4-16 s at 16 kHz by default):

  (a) the plain model, transformers' SDPA attention (no statistics);
  (b) satkern.patch(model) with all four statistics (G, V, D, W per utterance, layer, head);
  (c) transformers eager attention with output_attentions=True, and the same four metrics
      computed from the returned maps in torch (vectorized, float32).

Memory: one forward of each variant in a fresh subprocess, so its peak is its own: on CUDA
the peak of ``torch.cuda.max_memory_allocated`` above what the model and inputs hold, on
CPU the growth of the resident set size (sampled every 2 ms) over the same baseline.
Time: one more subprocess runs the variants interleaved round-robin (a warm-up round,
then ``--repeats`` rounds; medians), so a shared machine's load falls on all of them
alike. Two scopes: ``model`` (waveform to last hidden state) and ``encoder`` (the
transformer encoder alone on precomputed features; the convolutional front end would
otherwise set every memory peak). The parent prints the ratios side by side and writes
``benchmarks/results/models-<device>-<date>.md`` (``-quick`` appended for smoke runs).

    python benchmarks/bench_models.py            # the full comparison
    python benchmarks/bench_models.py --quick    # smoke check: 2 utterances of 1-2 s, 1 repeat
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SAMPLE_RATE = 16000
VARIANTS = {"a": "plain SDPA", "b": "satkern patch, all stats", "c": "eager output_attentions + torch stats"}


# ---------------------------------------------------------------------- one variant (child process)
class RssSampler:
    """Peak resident set size while active, sampled from /proc/self/statm every ``interval`` s
    (ru_maxrss would be dominated by the model's construction, which peaks higher than a
    small forward)."""

    def __init__(self, interval: float = 0.002):
        import threading

        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.start = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.start = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def torch_metrics(A, lengths):
    """G, V, D, W [B, H] from maps A [B, H, T, T] with padding (vectorized torch, A's dtype)."""
    import torch

    B, H, T, _ = A.shape
    idx = torch.arange(T, device=A.device)
    valid = idx[None, :] < lengths[:, None]  # [B, T]
    rows = valid[:, None, :, None] & valid[:, None, None, :]
    A = torch.where(rows, A, torch.zeros((), dtype=A.dtype, device=A.device))
    n = lengths.to(A.dtype).clamp_min(1)[:, None]
    G = -torch.special.xlogy(A, A).sum(-1).sum(-1) / n
    col = A.sum(-2) / n[..., None]
    V = torch.special.xlogy(col, col).sum(-1)
    dist = (idx[:, None] - idx[None, :]).abs().to(A.dtype)
    D = -(A * dist).sum((-1, -2)) / (n * n)
    W = A.amax((-1, -2))
    return G, V, D, W


class Setup:
    """The model, the batch and one ``step`` per variant (built once per child process)."""

    def __init__(self, args):
        import torch

        from satkern.models import load_model

        torch.manual_seed(0)
        self.args = args
        self.device = torch.device(args.device)
        dtype = getattr(torch, args.dtype)
        sm = load_model(args.model)
        sm.model.to(device=self.device, dtype=dtype)
        g = torch.Generator().manual_seed(1)
        secs = [args.min_s + (args.max_s - args.min_s) * i / max(1, args.batch - 1) for i in range(args.batch)]
        waves = [torch.randn(int(s * SAMPLE_RATE), generator=g) for s in secs]
        inputs, self.frames = sm.prepare(waves)
        self.inputs = {k: (v.to(device=self.device, dtype=dtype) if v.is_floating_point() else v.to(self.device))
                       for k, v in inputs.items()}
        self.model = sm.model
        self.lengths = self.frames.to(self.device)
        self.backends = set()
        self.maps = []
        self.collect_maps = False
        if args.scope == "encoder":
            # the transformer encoder alone, on precomputed conv features: the convolutional front
            # end's activations (several hundred MiB at 16 kHz) would otherwise set every peak
            model = self.model
            with torch.inference_mode():
                feats = model.feature_extractor(self.inputs["input_values"]).transpose(1, 2)
                hidden = model.feature_projection(feats)
                self.hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                self.frame_mask = model._get_feature_vector_attention_mask(self.hidden.shape[1],
                                                                           self.inputs["attention_mask"])
            # output_attentions is collected by the top-level model; on the encoder, hook the modules
            from satkern.patching.hf import find_modules

            for _, mod, _ in find_modules(model):
                mod.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if self.collect_maps:
            self.maps.append(output[1])

    def forward(self, output_attentions=False):
        if self.args.scope == "encoder":
            # the encoder zeroes padded frames of its input in place: hand it a copy
            return self.model.encoder(self.hidden.clone(), attention_mask=self.frame_mask)
        return self.model(**self.inputs, output_attentions=output_attentions)

    def sync(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step(self, variant):
        """One forward of ``variant``; returns (last hidden state, metrics or None)."""
        import torch

        import satkern

        cfg = self.model.config
        if variant == "a":
            cfg._attn_implementation_internal = "sdpa"
            return self.forward().last_hidden_state, None
        if variant == "b":
            with satkern.patch(self.model, backend=self.args.backend) as h:
                out = self.forward().last_hidden_state
                m = h.metrics
            self.backends |= h.backends_used
            return out, {f: getattr(m, f) for f in "GVDW"}
        cfg._attn_implementation_internal = "eager"
        self.maps.clear()
        self.collect_maps = True
        try:
            res = self.forward(output_attentions=True)
        finally:
            self.collect_maps = False
        attentions = self.maps if self.args.scope == "encoder" else res.attentions
        ms = [torch_metrics(a, self.lengths) for a in attentions]
        self.maps.clear()
        return res.last_hidden_state, {f: torch.stack([x[i] for x in ms], dim=1).float().cpu()
                                       for i, f in enumerate("GVDW")}


def run_memory(args) -> dict:
    """Peak memory of one forward of ``args.variant`` (a fresh process per variant); saves its results."""
    import torch

    st = Setup(args)
    with torch.inference_mode():
        st.sync()
        if st.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base_mem = torch.cuda.memory_allocated()
            out, metrics = st.step(args.variant)
            st.sync()
            peak = torch.cuda.max_memory_allocated() - base_mem
        else:
            with RssSampler() as sampler:
                out, metrics = st.step(args.variant)
            peak = sampler.growth
    if args.save:
        torch.save({"out": [out[i, :int(n)].float().cpu() for i, n in enumerate(st.frames)],
                    "metrics": metrics}, args.save)
    return {"variant": args.variant, "scope": args.scope, "peak_bytes": peak, "frames": st.frames.tolist(),
            "backends": sorted(st.backends)}


def run_timing(args) -> dict:
    """Median time of each variant, the variants interleaved round-robin in one process so a
    shared machine's load falls on all of them alike (one warm-up round first)."""
    import torch

    st = Setup(args)
    times = {v: [] for v in args.variants}
    with torch.inference_mode():
        for round_ in range(args.repeats + 1):
            for v in args.variants:
                st.sync()
                t0 = time.perf_counter()
                st.step(v)
                st.sync()
                if round_:
                    times[v].append(time.perf_counter() - t0)
    return {"times_s": times, "time_s": {v: statistics.median(t) for v, t in times.items()},
            "backends": sorted(st.backends)}


# ---------------------------------------------------------------------- parent
def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return rev + ("+uncommitted changes" if dirty else "") if rev else "unknown"
    except Exception:  # noqa: BLE001 - no git: still write results
        return "unknown"


def fmt_bytes(n: float) -> str:
    return f"{n / 2 ** 20:,.0f} MiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke check: 2 utterances of 1-2 s, 1 repeat")
    p.add_argument("--model", default="hubert-base")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backend", default="auto", help="satkern backend for (b)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--min-s", type=float, default=4.0)
    p.add_argument("--max-s", type=float, default=16.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default="abc")
    p.add_argument("--scopes", default="model,encoder",
                   help="model: waveform to last hidden state; encoder: the transformer encoder alone")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # child mode
    p.add_argument("--save", help=argparse.SUPPRESS)
    p.add_argument("--scope", default="model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick:
        args.batch, args.min_s, args.max_s, args.repeats = 2, 1.0, 2.0, 1

    if args.variant:
        print(json.dumps(run_timing(args) if args.variant == "time" else run_memory(args)))
        return 0

    import tempfile

    tmp = tempfile.mkdtemp(prefix="bench_models_")
    scopes = [x.strip() for x in args.scopes.split(",") if x.strip()]
    common = ["--model", args.model, "--device", args.device, "--dtype", args.dtype, "--backend", args.backend,
              "--batch", str(args.batch), "--min-s", str(args.min_s), "--max-s", str(args.max_s),
              "--repeats", str(args.repeats), "--variants", args.variants]

    def child(extra):
        proc = subprocess.run([sys.executable, os.path.abspath(__file__)] + extra + common,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
        return json.loads(proc.stdout.strip().splitlines()[-1])

    runs = {}  # scope -> (results, saved)
    for scope in scopes:
        results, saved = {}, {}
        for v in args.variants:
            save = os.path.join(tmp, f"{scope}-{v}.pt")
            print(f"[{scope}] memory of ({v}) {VARIANTS[v]} ...", flush=True)
            results[v] = child(["--variant", v, "--scope", scope, "--save", save])
            if "error" not in results[v]:
                saved[v] = torch.load(save)
        print(f"[{scope}] timing, variants interleaved ...", flush=True)
        timing = child(["--variant", "time", "--scope", scope])
        for v in args.variants:
            if "error" in timing:
                results[v]["error"] = "timing: " + timing["error"]
            elif "error" not in results[v]:
                results[v]["time_s"] = timing["time_s"][v]
                results[v]["times_s"] = timing["times_s"][v]
                results[v]["backends"] = sorted(set(results[v].get("backends", [])) | set(timing["backends"]))
        runs[scope] = (results, saved)
    shutil.rmtree(tmp, ignore_errors=True)

    import transformers

    import satkern
    now = _dt.datetime.now(_dt.timezone.utc)
    first = next(iter(runs.values()))[0] if runs else {}
    frames = next((r["frames"] for r in first.values() if "frames" in r), [])
    backends = sorted({b for res, _ in runs.values() for b in res.get("b", {}).get("backends", [])})
    lines = [f"# {args.model} (random weights): SDPA vs satkern patch vs eager + torch statistics", ""]
    lines.append(f"- date: {now.strftime('%Y-%m-%d %H:%M UTC')}")
    lines.append(f"- device: {args.device}: {device_name(args.device)}")
    lines.append(f"- versions: torch {torch.__version__}, transformers {transformers.__version__}, "
                 f"satkern {satkern.__version__}, python {platform.python_version()}")
    lines.append(f"- commit: {commit()}")
    lines.append(f"- batch: {args.batch} utterances of {args.min_s:g}-{args.max_s:g} s at 16 kHz, "
                 f"{args.dtype}; attention frames per utterance: {frames}")
    lines.append(f"- satkern backend asked: {args.backend}; ran: {backends or '?'}")
    lines.append(f"- time: median of {args.repeats} forwards after a warm-up round, the variants interleaved in one process; "
                 f"memory: one forward per variant in its own process, peak above model + inputs "
                 f"({'CUDA max_memory_allocated' if args.device.startswith('cuda') else 'process RSS growth, sampled every 2 ms'})")
    lines.append("- scopes: `model` = waveform to last hidden state (the conv front end included); `encoder` = the "
                 "transformer encoder alone on precomputed features")
    if args.quick:
        lines.append("- **--quick smoke run**: not a measurement")
    for scope, (results, saved) in runs.items():
        lines += ["", f"## scope: {scope}", "", "| variant | time (s) | vs (a) | peak memory | vs (a) |",
                  "|---|---|---|---|---|"]
        ta = results.get("a", {}).get("time_s")
        ma = results.get("a", {}).get("peak_bytes")
        for v, label in VARIANTS.items():
            r = results.get(v)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| ({v}) {label} | failed: {r['error']} | | | |")
                continue
            tr = f"{r['time_s'] / ta:.2f}x" if ta else ""
            mr = f"{r['peak_bytes'] / ma:.2f}x" if ma else ""
            lines.append(f"| ({v}) {label} | {r['time_s']:.3f} | {tr} | {fmt_bytes(r['peak_bytes'])} | {mr} |")
        rb, rc = results.get("b", {}), results.get("c", {})
        if "time_s" in rb and "time_s" in rc:
            lines += ["", f"(c)/(b): time {rc['time_s'] / rb['time_s']:.2f}x, memory "
                          f"{rc['peak_bytes'] / max(1, rb['peak_bytes']):.2f}x"]
        # cross-checks: (b) computes what (a) computes, and the metrics (c) computes
        checks = []
        if "a" in saved and "b" in saved:
            err = max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(saved["b"]["out"], saved["a"]["out"]))
            checks.append(f"(b) vs (a) output on valid frames: max rel diff {err:.2e}")
        if "b" in saved and "c" in saved:
            for f in "GVDW":
                x, y = saved["b"]["metrics"][f], saved["c"]["metrics"][f]
                checks.append(f"(b) vs (c) {f}: max abs diff {float((x - y).abs().max()):.2e}")
        lines += ["", "Checks: " + ("; ".join(checks) if checks else "none")]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        out_dir = os.path.join(ROOT, "benchmarks", "results")
        os.makedirs(out_dir, exist_ok=True)
        dev = "cuda" if args.device.startswith("cuda") else "cpu"
        suffix = "-quick" if args.quick else ""
        path = os.path.join(out_dir, f"models-{dev}-{now.strftime('%Y%m%d')}{suffix}.md")
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {path}")
    return 0 if all("error" not in r for res, _ in runs.values() for r in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

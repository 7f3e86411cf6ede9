"""The corpus job's throughput: satkern analyze vs the same job done the usual way.

Both pipelines read the same corpus with the same loader and length-bucketed batches, and
produce the same numbers (per-head G, V, D, W corpus means and the phoneme relation sums):

  (s) satkern: :func:`satkern.analysis.analyze` -- the model patched with :func:`satkern.patch`
      (statistics from the fused kernels, no attention map kept);
  (e) eager:   transformers eager attention with ``output_attentions=True``; the metrics and
      P'_u = (1/T) W^T A W computed from the returned maps with torch ops (float32, vectorized);
  (p) plain:   the unpatched model with transformers' SDPA attention over the same batches, no
      statistics at all: the floor a statistics pipeline is measured against (issue 22).

Reported: audio seconds per wall second of each (the loop over batches: loading, forward,
statistics; model construction and corpus discovery excluded), their ratio, the loader's busy
fraction (time spent loading / loop time / workers) and the fraction of the loop the model
waited for the loader. The corpus is the fixture corpus, listed ``--repeat`` times in a
manifest (distinct ids) for a longer run. Writes ``benchmarks/results/analyze-<device>-<date>.md``.

    python benchmarks/bench_analyze.py                 # hubert-base, fixture corpus once, joined by 5 (70 s of audio)
    python benchmarks/bench_analyze.py --quick         # smoke check: 4 utterances, tiny budget
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

LOAD_AT_START = os.getloadavg()[0]  # other work on the machine skews the timings; recorded with them

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "corpus"


def make_manifest(tmp: Path, repeat: int, limit, concat: int = 1) -> Path:
    """A manifest listing the fixture corpus ``repeat`` times; with ``concat`` > 1, every ``concat``
    consecutive fixture utterances are joined into one (audio and shifted .PHN) first, for
    utterances as long as LibriSpeech's (the fixture's are 1-3 s)."""
    import soundfile as sf

    rows = ["id,path,alignment,speaker"]
    phns = sorted(FIXTURE.rglob("*.PHN"))
    if limit:
        phns = phns[:limit]
    if concat > 1:
        joined = []
        for g in range(0, len(phns), concat):
            group = phns[g:g + concat]
            waves, lines, offset = [], [], 0
            for p in group:
                x, rate = sf.read(str(p.with_suffix(".WAV")), dtype="int16")
                for line in p.read_text().splitlines():
                    a, b, lab = line.split()
                    lines.append(f"{int(a) + offset} {int(b) + offset} {lab}")
                waves.append(x)
                offset += len(x)
            base = tmp / "joined" / f"J{g // concat:03d}"
            base.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(base.with_suffix(".WAV")), np.concatenate(waves), rate, subtype="PCM_16")
            base.with_suffix(".PHN").write_text("\n".join(lines) + "\n")
            joined.append(base.with_suffix(".PHN"))
        phns, root = joined, tmp / "joined"
    else:
        root = FIXTURE
    for r in range(repeat):
        for p in phns:
            uid = f"r{r}/{p.relative_to(root).with_suffix('').as_posix()}"
            rows.append(f"{uid},{p.with_suffix('.WAV')},{p},{p.parent.name}")
    m = tmp / "corpus.csv"
    m.write_text("\n".join(rows) + "\n")
    return m


class LoaderClock:
    """Iterates a job loader's ``(items, load seconds)`` batches, yielding the items and adding up how long
    the loop waited for the loader (``wait_s``) and how long loading took (``load_s``)."""

    def __init__(self, loader):
        self.loader, self.wait_s, self.load_s = loader, 0.0, 0.0

    def __iter__(self):
        it = iter(self.loader)
        while True:
            tw = time.perf_counter()
            try:
                items, tl = next(it)
            except StopIteration:
                return
            self.wait_s += time.perf_counter() - tw
            self.load_s += tl
            yield items


def eager_job(sm, manifest: Path, budget: float, workers: int, fold: bool):
    """The usual way: eager maps out of the model, statistics from them in torch."""
    from satkern.corpus import TIMIT39, collect_labels, discover_corpus, fold_39, frame_label_weights

    corpus = discover_corpus(manifest)
    label_map = fold_39 if fold else None
    labels = collect_labels(corpus, label_map=label_map)
    labels = list(TIMIT39) if fold else labels  # as the job does
    index = {l: i for i, l in enumerate(labels)}
    rate = sm.sample_rate
    loader = batches(sm, manifest, budget, workers, fold)
    sums = None
    Pp = Pu = None
    n = 0
    audio = 0.0
    t0 = time.perf_counter()
    clock = LoaderClock(loader)
    for items in clock:
        waves = [i.waveform for i in items]
        inputs, frames = sm.prepare(waves)
        with torch.inference_mode():
            att = sm.forward(inputs, output_attentions=True).attentions
            A = torch.stack(att, 1)  # [B, L, H, T, T]
            B, L, H, T, _ = A.shape
            idx = torch.arange(T)
            valid = idx[None, :] < frames[:, None]  # [B, T]
            vq = valid[:, None, None, :, None]
            vk = valid[:, None, None, None, :]
            A = torch.where(vq & vk, A, torch.zeros((), dtype=A.dtype))
            Tf = frames.to(A.dtype)[:, None, None]
            G = -torch.special.xlogy(A, A).sum(-1).sum(-1) / Tf
            c = A.sum(-2) / Tf[..., None]
            V = torch.special.xlogy(c, c).sum(-1)
            dist = (idx[:, None] - idx[None, :]).abs().to(A.dtype)
            D = -(A * dist).sum((-1, -2)) / (Tf * Tf)
            Wm = A.amax((-1, -2))
            m = torch.stack([G, V, D, Wm]).to(torch.float64)  # [4, B, L, H]
            sums = m.sum(1) if sums is None else sums + m.sum(1)
            Wl = torch.zeros(B, T, len(labels))
            for b, i in enumerate(items):
                k = int(frames[b])
                Wl[b, :k] = frame_label_weights(i.segments, len(i.waveform), sm.frame_stride, k, index)
            # P'_u = (1/T) W^T A W per utterance and head
            pp = torch.einsum("blhmk,bkn->blhmn", torch.einsum("btm,blhtk->blhmk", Wl, A), Wl)
            pp = (pp / frames.to(pp.dtype)[:, None, None, None, None]).sum(0).to(torch.float64)
            col = Wl.sum(1)
            pu = (col[:, :, None] * col[:, None, :] / (frames.to(col.dtype) ** 2)[:, None, None]).sum(0).to(torch.float64)
            Pp = pp if Pp is None else Pp + pp
            Pu = pu if Pu is None else Pu + pu
        n += B
        audio += sum(len(w) for w in waves) / rate
    run_s = time.perf_counter() - t0
    return {"means": (sums / n).numpy(), "Pp": (Pp / n).numpy(), "Pu": (Pu / n).numpy(), "n": n, "audio_s": audio,
            "run_s": run_s, "load_s": clock.load_s, "wait_s": clock.wait_s}


def batches(sm, manifest: Path, budget: float, workers: int, fold: bool):
    """The job's loader over ``manifest``: length-bucketed batches, as analyze plans them."""
    from satkern.corpus import BatchDataset, discover_corpus, fold_39, plan_batches

    corpus = discover_corpus(manifest)
    utts = sorted(corpus.utterances, key=lambda u: u.uid)
    ds = BatchDataset(plan_batches(utts, sm.sample_rate, budget), sm.sample_rate, with_alignments=True,
                      label_map=fold_39 if fold else None)
    return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda x: x)


def plain_job(sm, manifest: Path, budget: float, workers: int, fold: bool):
    """The floor: the unpatched model (SDPA attention) over the same batches, no statistics."""
    audio, n = 0.0, 0
    t0 = time.perf_counter()
    clock = LoaderClock(batches(sm, manifest, budget, workers, fold))
    for items in clock:
        waves = [i.waveform for i in items]
        inputs, _ = sm.prepare(waves)
        with torch.inference_mode():
            sm.forward(inputs)
        n += len(items)
        audio += sum(len(w) for w in waves) / sm.sample_rate
    return {"n": n, "audio_s": audio, "run_s": time.perf_counter() - t0, "load_s": clock.load_s,
            "wait_s": clock.wait_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="hubert-base", help="built-in name (random weights; default hubert-base)")
    ap.add_argument("--repeat", type=int, default=1, help="list the fixture corpus this many times (default 1)")
    ap.add_argument("--concat", type=int, default=5,
                    help="join this many fixture utterances into one (default 5: ~12 s utterances, as in LibriSpeech)")
    ap.add_argument("--budget-seconds", type=float, default=32.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--quick", action="store_true", help="4 utterances once, tiny-wav2vec2-large unless --model given")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    limit = None
    if args.quick:
        limit, args.repeat, args.concat = 4, 1, 1
        if "--model" not in (argv if argv is not None else sys.argv[1:]):
            args.model = "tiny-wav2vec2-large"

    import satkern
    from satkern.analysis import AnalyzeConfig, analyze
    from satkern.models import load_model

    torch.manual_seed(0)
    sm = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = make_manifest(tmp, args.repeat, limit, args.concat)
        # (s) satkern job
        s = analyze(AnalyzeConfig(model=args.model, corpus=str(manifest), out=str(tmp / "out"), progress=False,
                                  budget_seconds=args.budget_seconds, workers=args.workers, backend=args.backend,
                                  fold_39=True), model=sm, log=lambda m: None)
        import pandas as pd

        heads = pd.read_csv(tmp / "out" / "heads.csv")
        z = np.load(tmp / "out" / "prm.npz")
        # (e) eager pipeline, same model object switched to eager attention
        prev = sm.model.config._attn_implementation
        sm.model.set_attn_implementation("eager")
        e = eager_job(sm, manifest, args.budget_seconds, args.workers, fold=True)
        sm.model.set_attn_implementation("sdpa")
        p = plain_job(sm, manifest, args.budget_seconds, args.workers, fold=True)
        sm.model.set_attn_implementation(prev)

    L, H = s["model"]["layers"], s["model"]["heads"]
    diffs = {k: float(np.abs(heads[k].to_numpy().reshape(L, H) - e["means"][i]).max()) for i, k in enumerate("GVDW")}
    diffs["P_counts"] = float(np.abs(z["P_counts"] - e["Pp"]).max())
    lo = s["loader"]
    thr_s = s["throughput_audio_s_per_s"]
    thr_e = e["audio_s"] / e["run_s"]
    thr_p = p["audio_s"] / p["run_s"]
    busy_e = e["load_s"] / (e["run_s"] * max(args.workers, 1))
    load_at_start = LOAD_AT_START
    device = f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"
    now = _dt.datetime.now(_dt.timezone.utc)
    lines = [
        f"# corpus job throughput: satkern analyze vs eager output_attentions + torch statistics vs a plain SDPA forward",
        "",
        f"- date: {now:%Y-%m-%d %H:%M} UTC{'  (--quick smoke run)' if args.quick else ''}",
        f"- device: {device}; load average (1 min) at start {load_at_start:.1f}",
        f"- versions: torch {torch.__version__}, satkern {satkern.__version__}, python {platform.python_version()}; "
        f"commit {s['git_commit']}",
        f"- model: {args.model} (random weights), {L} layers x {H} heads; backend asked {args.backend}, "
        f"ran {s['backend']['used']}",
        f"- corpus: fixture corpus (festival, TIMIT layout) x{args.repeat}, {args.concat} utterances joined into one: "
        f"{e['n']} utterances, "
        f"{e['audio_s']:.1f} s of audio; 39-class phone relations; budget {args.budget_seconds:g} padded s/batch; "
        f"{args.workers} loader worker(s)",
        "",
        "| pipeline | loop time (s) | audio s / wall s | vs eager | vs plain SDPA | loader busy | model waiting for loader |",
        "|---|---|---|---|---|---|---|",
        f"| (s) satkern analyze | {lo['run_s']:.2f} | {thr_s:.2f} | {thr_s / thr_e:.2f}x | {thr_s / thr_p:.2f}x | "
        f"{lo['busy_fraction']:.1%} | {lo['wait_fraction']:.1%} |",
        f"| (e) eager output_attentions + torch stats | {e['run_s']:.2f} | {thr_e:.2f} | 1.00x | {thr_e / thr_p:.2f}x | "
        f"{busy_e:.1%} | {e['wait_s'] / e['run_s']:.1%} |",
        f"| (p) plain SDPA forward, no statistics | {p['run_s']:.2f} | {thr_p:.2f} | {thr_p / thr_e:.2f}x | 1.00x | "
        f"{p['load_s'] / (p['run_s'] * max(args.workers, 1)):.1%} | {p['wait_s'] / p['run_s']:.1%} |",
        "",
        "Agreement (s) vs (e), max abs diff: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"analyze-cpu-{now:%Y%m%d}.md"
        # one file per device and day; each run appends its section (different settings side by side)
        with open(path, "a") as f:
            f.write(("\n---\n\n" if path.exists() and path.stat().st_size else "") + text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

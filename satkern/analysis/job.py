"""The corpus analysis job: a model and a corpus in, the paper's per-head analysis out.

:func:`analyze` runs every utterance of a corpus through the patched model
(:func:`satkern.patch`) under ``torch.inference_mode``, sums the per-utterance head metrics
(G, V, D, W; METRICS.md eqs. 1-3) and, when the corpus has phone alignments, the phoneme
relation sums (P'_u and P_U,u; sec. 6), and writes into the output folder:

* ``heads.csv``      -- ``layer, head, G, V, D, W, category, n_utterances`` (corpus means);
* ``prm.npz``        -- ``P_counts`` [L,H,Y,Y] (corpus P'), ``P_base`` [Y,Y] (corpus P_U),
  ``P`` [L,H,Y,Y] ((P' - P_U) / P_U, NaN where P_U = 0), ``concentration`` [L,H,Y]
  (mean over m of P[m, n], NaN left out), ``labels`` [Y];
* ``utterances.parquet`` (``per_utterance=True``) -- ``utterance, duration, layer, head, G, V, D, W``;
* ``summary.json``   -- model, corpus, counts, audio hours, time, throughput, device, versions,
  commit, every skipped file with its reason.

Reliability: bad files are skipped with a reason; the accumulators and the set of finished
utterances are checkpointed atomically (``DIR/checkpoint/``) every ``checkpoint_seconds``;
``resume=True`` continues from the checkpoint and ends with the same results. Under
``torchrun`` the utterances are sharded across ranks and the sums all-reduced (gloo on CPU,
NCCL on CUDA); rank 0 writes the outputs (``DIR`` must be on a file system all ranks share).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from ..metrics import categorize
from ..ops import STAT_NAMES
from ..corpus.batching import BatchDataset, plan_batches
from ..corpus.audio import resampled_length
from ..corpus.framing import frame_label_weights
from ..corpus.phones import TIMIT39, fold_39
from ..corpus.readers import collect_labels, discover_corpus
from .accumulate import METRICS, Accumulator
from .output import atomic_write_bytes, atomic_write_text, write_heads_csv, write_prm, write_utterances

CHECKPOINT_VERSION = 1


@dataclass
class AnalyzeConfig:
    """Everything :func:`analyze` needs (the CLI maps its options one-to-one onto these)."""

    model: str
    corpus: str
    out: str
    device: str = "cpu"
    backend: str = "auto"
    stats: Sequence[str] = STAT_NAMES
    budget_seconds: float = 40.0  # padded audio seconds per batch
    workers: int = 0  # DataLoader worker processes (0: load in the main process)
    per_utterance: bool = False
    resume: bool = False
    fold_39: bool = False
    layout: Optional[str] = None
    alignments: Optional[str] = None  # folder of TextGrids (MFA output) for librispeech/directory corpora
    phone_tier: Optional[str] = None
    phone_relations: bool = True  # PRM when alignments exist
    allow_resample: bool = True
    checkpoint_seconds: float = 60.0
    checkpoint_batches: Optional[int] = None  # also checkpoint every N batches (tests)
    max_utterances: Optional[int] = None  # first N utterances (by id) only
    order: str = "length"  # "length" (longest batch first) or "shuffle" (batch order shuffled with `seed`)
    seed: int = 0  # torch seed before building the model (built-in names: random weights) and for "shuffle"
    progress: bool = True
    trust_checkpoint: bool = False
    overwrite: bool = False
    maps: int = 0  # K > 0: attention maps of the K most global / vertical / diagonal heads -> maps.npz (maps.py)

    def fingerprint_fields(self) -> dict:
        return {"model": self.model, "corpus": os.path.abspath(self.corpus), "stats": sorted(self.stats),
                "fold_39": self.fold_39, "layout": self.layout, "alignments": self.alignments,
                "phone_tier": self.phone_tier, "phone_relations": self.phone_relations,
                "allow_resample": self.allow_resample, "max_utterances": self.max_utterances, "seed": self.seed}


class ResumeError(RuntimeError):
    pass


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _setup_distributed(device: str) -> _Dist:
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return _Dist()
    world = int(env["WORLD_SIZE"])
    rank = int(env["RANK"])
    local = int(env.get("LOCAL_RANK", 0))
    if world <= 1:
        return _Dist(rank, world, local)
    import torch.distributed as dist

    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        here = True
    return _Dist(rank, world, local, here)


def _git_commit() -> Optional[str]:
    root = Path(__file__).resolve().parents[2]
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except Exception:
        return None


def _versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("satkern", "transformers", "soundfile", "scipy", "pandas"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


def _weights_checksum(model: torch.nn.Module) -> str:
    """A cheap fingerprint of the weights (a resumed run must use the same model): per tensor, its
    shape and 1024 evenly strided values (hashing all of hubert-base's 95M weights costs seconds)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            if torch.is_tensor(p) and p.numel():
                flat = p.detach().reshape(-1)
                picks = flat[:: max(1, flat.numel() // 1024)][:1024].to("cpu", torch.float64)
                h.update(f"{name}:{tuple(p.shape)}:".encode() + picks.numpy().tobytes())
    return h.hexdigest()[:16]


def _identity(x):
    return x


def _fmt_hours(seconds: float) -> str:
    return f"{seconds / 3600:.3f} h"


class _Checkpointer:
    """Per-rank checkpoint ``DIR/checkpoint/rank{r}-of-{w}.pt``: accumulators, finished ids,
    skipped files, per-utterance part files, written atomically (tmp + os.replace)."""

    def __init__(self, out: Path, dist: _Dist):
        self.dir = out / "checkpoint"
        self.parts_dir = out / "checkpoint" / "parts"
        self.path = self.dir / f"rank{dist.rank}-of-{dist.world}.pt"
        self.dist = dist

    def all_paths(self) -> List[Path]:
        return sorted(self.dir.glob("rank*-of-*.pt"))

    def save(self, state: dict) -> None:
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path, buf.getvalue())

    def load(self, path: Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=False)


def analyze(config: AnalyzeConfig, *, model=None, on_batch: Optional[Callable[[int, List[str]], None]] = None,
            log: Callable[[str], None] = None) -> dict:
    """Run the analysis job; returns the summary dict (also written to ``summary.json`` by rank 0).

    ``model``: an already loaded :class:`satkern.models.SpeechModel` (else ``config.model`` is loaded).
    ``on_batch(batch_index, utterance_ids)``: called after each batch is accumulated (and
    checkpointed if due); an exception there stops the job (tests use it to simulate a kill).
    """
    import satkern
    from satkern.models import load_model

    t_start = time.perf_counter()
    if not isinstance(config.maps, int) or isinstance(config.maps, bool) or config.maps < 0:
        raise ValueError(f"satkern analyze: --maps must be a whole number >= 0 (heads per category); got {config.maps!r}")
    if config.maps and not config.per_utterance:
        from dataclasses import replace

        config = replace(config, per_utterance=True)  # maps.py picks utterances by their per-utterance values
    dist = _setup_distributed(config.device)
    try:
        return _analyze(config, dist, model, on_batch, log, t_start, satkern, load_model)
    finally:
        if dist.initialized_here:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def _analyze(config, dist, model, on_batch, log, t_start, satkern, load_model) -> dict:
    rank0 = dist.rank == 0
    if log is None:
        log = (lambda s: print(s, file=sys.stderr, flush=True)) if rank0 else (lambda s: None)
    out = Path(config.out)
    device = torch.device(config.device if not (config.device.startswith("cuda") and dist.enabled)
                          else f"cuda:{dist.local_rank}")
    stats = tuple(config.stats)
    bad = [s for s in stats if s not in STAT_NAMES]
    if bad:
        raise ValueError(f"satkern analyze: unknown statistics {bad}; choose from {STAT_NAMES}")

    ck = _Checkpointer(out, dist)
    if out.exists() and not config.resume and not config.overwrite:
        if ck.all_paths() or (out / "summary.json").exists():
            raise FileExistsError(f"satkern analyze: {out} holds a previous run; pass --resume to continue it "
                                  f"or --overwrite to start over")
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()  # every rank has checked before rank 0 clears anything
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        if not config.resume:
            for p in ck.all_paths() + [out / n for n in ("heads.csv", "prm.npz", "utterances.parquet", "maps.npz",
                                                 "summary.json")]:
                if p.exists():
                    p.unlink()  # a fresh run leaves no output of an earlier one behind
            if ck.parts_dir.exists():
                for p in ck.parts_dir.glob("*.parquet"):
                    p.unlink()
        ck.parts_dir.mkdir(parents=True, exist_ok=True)
    if dist.enabled:
        tdist.barrier()

    # ---------------------------------------------------------------- corpus
    corpus = discover_corpus(config.corpus, layout=config.layout, alignments=config.alignments)
    utts = sorted(corpus.utterances, key=lambda u: u.uid)
    if config.max_utterances is not None:
        utts = utts[: config.max_utterances]
    corpus.utterances = utts
    use_labels = config.phone_relations and corpus.has_alignments
    label_map = fold_39 if config.fold_39 else None
    labels: List[str] = []
    if use_labels:
        found = collect_labels(corpus, tier=config.phone_tier, label_map=label_map)
        labels = list(TIMIT39) if config.fold_39 else found
        extra = sorted(set(found) - set(labels))
        if extra:
            raise ValueError(f"satkern analyze: labels outside the 39-class set after folding: {extra}")

    # ---------------------------------------------------------------- model
    if model is None:
        torch.manual_seed(config.seed)  # built-in names: the same random weights on every rank and rerun
        model = load_model(config.model, trust_checkpoint=config.trust_checkpoint)
    model.model.to(device).eval()
    if model.random_weights:
        log("=" * 72 + f"\nsatkern analyze: model {model.name!r} has RANDOM WEIGHTS (built-in architecture, "
            f"seed {config.seed});\nthe numbers below describe an untrained network, not a trained SAT.\n" + "=" * 72)
    rate = int(model.sample_rate)
    notes = []

    label_index = {l: i for i, l in enumerate(labels)}
    utts = corpus.utterances
    # utterances too short for the model (0 frames) are skipped up front
    kept, short = [], []
    for u in utts:
        n = resampled_length(u.num_samples, u.sample_rate, rate)
        if u.num_samples > 0 and model.num_frames(n) <= 0:
            short.append(u)
        else:
            kept.append(u)
    for u in short:
        corpus.skip(u.uid, u.audio, f"too short for the model ({u.num_samples} samples at {u.sample_rate} Hz "
                                    f"give 0 frames)")
    utts = kept
    discovery_skipped = list(corpus.skipped)

    fingerprint = dict(config.fingerprint_fields(), weights=_weights_checksum(model.model), labels=labels,
                       utterances=hashlib.sha256("\n".join(u.uid for u in utts).encode()).hexdigest()[:16],
                       world=dist.world)

    # ---------------------------------------------------------------- resume state
    acc = None
    finished: set = set()
    mine_finished: List[str] = []
    load_skipped: List[dict] = []
    parts: List[str] = []
    prior_elapsed = 0.0
    if config.resume:
        paths = ck.all_paths()
        if paths:
            others = [p for p in paths if not p.name.endswith(f"-of-{dist.world}.pt")]
            if others:
                raise ResumeError(f"satkern analyze --resume: checkpoints from a run with another number of "
                                  f"processes ({[p.name for p in others]}); resume with the same world size")
            for p in paths:
                st = ck.load(p)
                if st.get("version") != CHECKPOINT_VERSION or st.get("fingerprint") != fingerprint:
                    diff = {k: (st.get("fingerprint", {}).get(k), v) for k, v in fingerprint.items()
                            if st.get("fingerprint", {}).get(k) != v}
                    raise ResumeError(f"satkern analyze --resume: {p} was written by a different job "
                                      f"(differs in {diff}); use another --out or drop --resume with --overwrite")
                finished.update(st["finished"])
                if p == ck.path:
                    acc = Accumulator.from_state(st["acc"])
                    mine_finished = list(st["finished"])
                    load_skipped = list(st["skipped"])
                    parts = list(st["parts"])
                    prior_elapsed = float(st.get("elapsed", 0.0))
            log(f"satkern analyze: resuming; {len(finished)} utterances already done")
        else:
            log("satkern analyze: --resume given but no checkpoint found; starting from the beginning")

    n_prior = len(mine_finished)

    # ---------------------------------------------------------------- shard + batches
    todo = [u for u in utts if u.uid not in finished]
    by_len = sorted(todo, key=lambda u: (-resampled_length(u.num_samples, u.sample_rate, rate), u.uid))
    shard = by_len[dist.rank::dist.world]
    batches = plan_batches(shard, rate, config.budget_seconds)
    if config.order == "shuffle":
        random.Random(config.seed).shuffle(batches)
    elif config.order != "length":
        raise ValueError(f"satkern analyze: order must be 'length' or 'shuffle'; got {config.order!r}")
    shard_seconds = sum(u.duration for u in shard)
    ds = BatchDataset(batches, rate, with_alignments=corpus.has_alignments, tier=config.phone_tier, label_map=label_map,
                      allow_resample=config.allow_resample)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=config.workers,
                                         collate_fn=_identity, prefetch_factor=2 if config.workers else None,
                                         persistent_workers=False)

    log(f"satkern analyze: {model.name} ({model.family}, {rate} Hz, {model.frame_stride} samples/frame) on "
        f"{len(utts)} utterances of {corpus.layout} corpus {config.corpus}"
        + (f"; phone relations over {len(labels)} labels" if use_labels else "; no alignments: no phone relations")
        + (f"; rank {dist.rank}/{dist.world}" if dist.enabled else ""))

    # ---------------------------------------------------------------- run
    h = satkern.patch(model, stats=stats, backend=config.backend)
    if acc is None:
        acc = Accumulator(h.num_layers, h.num_heads, len(labels) if use_labels else 0)
    acc.check_shape(h.num_layers, h.num_heads, len(labels) if use_labels else 0)
    rows: List[dict] = []
    wait_s = load_s = compute_s = 0.0
    audio_seconds = 0.0  # processed in this run (this rank)
    t_run = time.perf_counter()
    last_ck = time.perf_counter()
    bar = None
    if config.progress and rank0:
        from tqdm import tqdm

        bar = tqdm(total=len(shard), unit="utt", dynamic_ncols=True, desc="analyze", file=sys.stderr)

    def checkpoint():
        nonlocal rows, last_ck
        if rows:
            name = f"rank{dist.rank}-{len(parts):06d}.parquet"
            write_utterances(ck.parts_dir / name, rows)
            parts.append(name)
            rows = []
        ck.save({"version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "acc": acc.state(),
                 "finished": mine_finished, "skipped": load_skipped, "parts": parts,
                 "elapsed": prior_elapsed + time.perf_counter() - t_run})
        last_ck = time.perf_counter()

    try:
        it = iter(loader)
        b_index = 0
        while True:
            t0 = time.perf_counter()
            try:
                items, t_load = next(it)
            except StopIteration:
                break
            wait_s += time.perf_counter() - t0
            load_s += t_load
            t1 = time.perf_counter()
            good = []
            for it_ in items:
                if it_.waveform is None:
                    load_skipped.append({"utterance": it_.uid, "path": it_.path, "reason": it_.error})
                    mine_finished.append(it_.uid)
                else:
                    good.append(it_)
            if good:
                inputs, frame_lengths = model.prepare([g.waveform for g in good])
                if use_labels:
                    T = int(frame_lengths.max())
                    W = torch.zeros(len(good), T, len(labels), dtype=torch.float32)
                    for i, g in enumerate(good):
                        n = int(frame_lengths[i])
                        W[i, :n] = frame_label_weights(g.segments, len(g.waveform), model.frame_stride, n, label_index)
                    h.set_labels(W.to(device))
                with torch.inference_mode():
                    model.forward(inputs)  # GroupNorm front ends run per utterance: batching changes nothing
                m = h.metrics
                lengths = h.lengths
                prm = (h.prm_counts, h.prm_base) if use_labels else None
                batch_audio = sum(len(g.waveform) for g in good) / rate
                acc.add(m, lengths, prm, audio_seconds=batch_audio)
                h.reset()
                mine_finished.extend(g.uid for g in good)
                audio_seconds += batch_audio
                if config.per_utterance:
                    for i, g in enumerate(good):
                        for l in range(h.num_layers):
                            for hd in range(h.num_heads):
                                rows.append({"utterance": g.uid, "duration": len(g.waveform) / rate, "layer": l,
                                             "head": hd, **{k: (float(getattr(m, k)[i, l, hd]) if getattr(m, k) is not None
                                                                else float("nan")) for k in METRICS}})
            compute_s += time.perf_counter() - t1
            if bar is not None:
                el = time.perf_counter() - t_run
                bar.update(len(items))
                bar.set_postfix_str(f"{_fmt_hours(audio_seconds)} audio, "
                                    f"{audio_seconds / max(el, 1e-9):.1f}x real time")
            due = (time.perf_counter() - last_ck >= config.checkpoint_seconds
                   or (config.checkpoint_batches and (b_index + 1) % config.checkpoint_batches == 0))
            if due:
                checkpoint()
            if on_batch is not None:
                on_batch(b_index, [it_.uid for it_ in items])
            b_index += 1
        checkpoint()
    finally:
        h.remove()
        if bar is not None:
            bar.close()
    run_s = time.perf_counter() - t_run

    # ---------------------------------------------------------------- reduce
    all_skipped = load_skipped
    all_parts = parts
    n_done = len(mine_finished) - n_prior
    timing = {"wait_s": wait_s, "load_s": load_s, "compute_s": compute_s, "run_s": run_s}
    if dist.enabled:
        import torch.distributed as tdist

        acc.all_reduce(device if device.type == "cuda" else torch.device("cpu"))
        gathered = [None] * dist.world
        tdist.all_gather_object(gathered, {"skipped": load_skipped, "parts": parts, "done": n_done,
                                           "timing": timing, "audio": audio_seconds})
        all_skipped = [s for g in gathered for s in g["skipped"]]
        all_parts = [p for g in gathered for p in g["parts"]]
        n_done = sum(g["done"] for g in gathered)
        audio_seconds = sum(g["audio"] for g in gathered)
        timing = {k: max(g["timing"][k] for g in gathered) for k in timing}

    summary = None
    if rank0:
        elapsed = prior_elapsed + (time.perf_counter() - t_start)
        heads = acc.heads_table()
        cats = None
        if all(heads[k] is not None for k in "GVD"):
            cats = categorize(torch.from_numpy(heads["G"]), torch.from_numpy(heads["V"]), torch.from_numpy(heads["D"]))
        write_heads_csv(out / "heads.csv", heads, cats)
        if use_labels:
            write_prm(out / "prm.npz", acc, labels)
        if config.per_utterance:
            write_utterances(out / "utterances.parquet", None, parts=[ck.parts_dir / p for p in all_parts])
        maps_info = None
        if config.maps:
            import pandas as pd

            from .maps import write_maps

            maps_info = write_maps(out / "maps.npz", model=model, utterances=utts,
                                   per_utterance=pd.read_parquet(out / "utterances.parquet"), heads=heads,
                                   k=config.maps, model_spec=config.model, weights_checksum=fingerprint["weights"],
                                   with_alignments=corpus.has_alignments, tier=config.phone_tier, label_map=label_map,
                                   allow_resample=config.allow_resample, backend=config.backend, log=log)
        skipped = discovery_skipped + all_skipped
        proc_audio = audio_seconds
        summary = {
            "model": {"spec": config.model, "name": model.name, "family": model.family,
                      "random_weights": bool(model.random_weights), "sample_rate": rate,
                      "frame_stride": model.frame_stride, "layers": acc.L, "heads": acc.H,
                      "weights_checksum": fingerprint["weights"]},
            "corpus": {"path": str(config.corpus), "layout": corpus.layout, "utterances_found": len(utts) +
                       len(discovery_skipped), "alignments": bool(corpus.has_alignments), "fold_39": config.fold_39,
                       "labels": labels},
            "counts": {"utterances_analyzed": int(acc.n_utterances), "utterances_skipped": len(skipped),
                       "utterances_in_prm": int(acc.prm_n), "frames": int(acc.frames)},
            "audio_hours": acc.audio_seconds / 3600.0,
            "audio_hours_this_run": proc_audio / 3600.0,
            "elapsed_s": elapsed,
            "throughput_audio_s_per_s": (proc_audio / run_s) if run_s > 0 else None,
            "loader": {"workers": config.workers, **timing,
                       "wait_fraction": timing["wait_s"] / run_s if run_s else None,
                       "busy_fraction": (timing["load_s"] / (run_s * max(config.workers, 1))) if run_s else None},
            "categories": ({c: cats.count(c) for c in ("global", "vertical", "diagonal")} if cats else None),
            "device": _device_description(device),
            "backend": {"requested": config.backend, "used": sorted(h.backends_used)},
            "stats": list(stats),
            "notes": notes,
            "maps": maps_info,
            "processes": dist.world,
            "resumed": bool(finished),
            "utterances_this_run": n_done,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            "versions": _versions(),
            "git_commit": _git_commit(),
            "outputs": sorted(p.name for p in out.iterdir() if p.is_file() and p.suffix in (".csv", ".npz", ".parquet")),
            "skipped": skipped,
        }
        summary["outputs"] = sorted(set(summary["outputs"]) | {"summary.json"})
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
        log(f"satkern analyze: {int(acc.n_utterances)} utterances ({summary['audio_hours']:.4f} h of audio) in "
            f"{elapsed:.1f} s; {len(skipped)} skipped; outputs in {out}")
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()
    return summary if summary is not None else {"rank": dist.rank}


def _device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

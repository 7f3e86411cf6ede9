"""The corpus analysis job: a model and a corpus in, the paper's per-head analysis out.

:func:`analyze` runs every utterance of a corpus through the patched model
(:func:`satkern.patch`) under ``torch.inference_mode``, sums the per-utterance head metrics
(G, V, D, W; METRICS.md eqs. 1-3) and, when the corpus has phone alignments, the phoneme
relation sums (P'_u and P_U,u; sec. 6), and writes into the output folder:

* ``heads.csv``      -- ``layer, head, G, V, D, W, category, n_utterances`` (corpus means);
* ``prm.npz``        -- ``P_counts`` [L,H,Y,Y] (corpus P'), ``P_base`` [Y,Y] (corpus P_U),
  ``P`` [L,H,Y,Y] ((P' - P_U) / P_U, NaN where P_U = 0), ``concentration`` [L,H,Y]
  (mean over m of P[m, n], NaN left out), ``labels`` [Y];
* ``utterances.parquet`` (``per_utterance=True``) -- ``utterance, duration, frames, layer, head, G, V, D, W``
  (``frames``: the model frames T the metrics are computed over);
* ``summary.json``   -- model, corpus, counts, audio hours, time, throughput, device, versions,
  commit, every skipped file with its reason.

Reliability: bad files are skipped with a reason; the accumulators and the set of finished
utterances are checkpointed atomically (``DIR/checkpoint/``) every ``checkpoint_seconds``;
``resume=True`` continues from the checkpoint and ends with the same results. On SIGINT or SIGTERM
the batch being computed finishes, a checkpoint is written and :class:`satkern.jobs.Interrupted`
is raised ("interrupted: 12 of 30 utterances kept; resume with --resume"; the CLI prints that line
and exits 130 / 143); a second signal stops at once, the last checkpoint kept. Progress is counted
in audio seconds, and an input longer than ``satkern.jobs.LONG_INPUT_FRAMES`` attention frames is
announced with its estimated time. Under
``torchrun`` the utterances are sharded across ranks and the sums all-reduced (gloo on CPU,
NCCL on CUDA); rank 0 writes the outputs (``DIR`` must be on a file system all ranks share).
"""
from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch

from ..metrics import categorize
from ..ops import STAT_NAMES, BackendUnavailable
from ..corpus.batching import BatchDataset, plan_batches
from ..corpus.audio import resampled_length
from ..corpus.phones import TIMIT39, fold_39
from ..corpus.readers import collect_labels
from ..jobs import (AudioProgress, CorpusJob, CorpusJobConfig, ResumeError, backend_error, ignore_stop_signals,
                    stop_between)
from .accumulate import METRICS, Accumulator
from .output import atomic_write_bytes, write_heads_csv, write_prm, write_utterances

CHECKPOINT_VERSION = 1
# what a fresh run removes from --out before it starts (glob patterns; --resume keeps them)
STALE_OUTPUTS = ("checkpoint/rank*-of-*.pt", "checkpoint/parts/*.parquet", "heads.csv", "prm.npz",
                 "utterances.parquet", "maps.npz", "head_maps.npz", "summary.json")


@dataclass
class AnalyzeConfig(CorpusJobConfig):
    """Everything :func:`analyze` needs (the CLI maps its options one-to-one onto these); the options
    every corpus job shares (model, corpus, out, device, backend, seed, ...) are :class:`CorpusJobConfig`'s
    (``seed`` also shuffles the batch order with ``order="shuffle"``)."""

    stats: Sequence[str] = STAT_NAMES
    budget_seconds: float = 40.0  # padded audio seconds per batch
    workers: int = 0  # DataLoader worker processes (0: load in the main process)
    per_utterance: bool = False
    resume: bool = False
    fold_39: bool = False
    phone_relations: bool = True  # PRM when alignments exist
    allow_resample: bool = True
    checkpoint_seconds: float = 60.0
    checkpoint_batches: Optional[int] = None  # also checkpoint every N batches (tests)
    max_utterances: Optional[int] = None  # first N utterances (by id) only
    order: str = "length"  # "length" (longest batch first) or "shuffle" (batch order shuffled with `seed`)
    min_seconds: float = 0.25  # clips shorter than this are skipped with a reason
    keep_checkpoint: bool = False  # keep DIR/checkpoint/ after a successful run
    s3prl_whole_sequence: bool = False  # s3prl checkpoints: ignore task.sequence_length (no chunks)
    maps: int = 0  # K > 0: attention maps of the K most global / vertical / diagonal heads -> maps.npz (maps.py)
    head_maps: int = 0  # N > 0: every head's map of N utterances spread by length -> head_maps.npz (head_maps.py)
    head_maps_for: Sequence[str] = ()  # and/or of these utterance ids

    def fingerprint_fields(self) -> dict:
        return {"model": self.model, "corpus": os.path.abspath(self.corpus), "stats": sorted(self.stats),
                "fold_39": self.fold_39, "layout": self.layout, "alignments": self.alignments,
                "phone_tier": self.phone_tier, "phone_relations": self.phone_relations,
                "allow_resample": self.allow_resample, "max_utterances": self.max_utterances, "seed": self.seed,
                "min_seconds": self.min_seconds, "s3prl_whole_sequence": self.s3prl_whole_sequence}


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


def _identity(x):
    return x


class _Checkpointer:
    """Per-rank checkpoint ``DIR/checkpoint/rank{r}-of-{w}.pt``: accumulators, finished ids,
    skipped files and the names of the per-utterance part files (``DIR/checkpoint/parts/``), written
    atomically (tmp + fsync + os.replace) after the parts it names: the ``.pt`` is the manifest, and
    ``--resume`` reads only the parts it names (a part, or a temporary file, that a kill left behind
    unnamed is ignored and later overwritten or removed with the folder)."""

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
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # written atomically, so only damage from outside gets here
            raise ResumeError(f"satkern analyze --resume: {path} cannot be read ({type(e).__name__}: {e}); "
                              f"start over with --overwrite") from None


def analyze(config: AnalyzeConfig, *, model=None, on_batch: Optional[Callable[[int, List[str]], None]] = None,
            log: Callable[[str], None] = None) -> dict:
    """Run the analysis job; returns the summary dict (also written to ``summary.json`` by rank 0).

    ``model``: an already loaded :class:`satkern.models.SpeechModel` (else ``config.model`` is loaded).
    ``on_batch(batch_index, utterance_ids)``: called after each batch is accumulated (and
    checkpointed if due); an exception there stops the job (tests use it to simulate a kill).
    """
    import satkern

    t_start = time.perf_counter()
    if not isinstance(config.maps, int) or isinstance(config.maps, bool) or config.maps < 0:
        raise ValueError(f"satkern analyze: --maps must be a whole number >= 0 (heads per category); got {config.maps!r}")
    if not isinstance(config.head_maps, int) or isinstance(config.head_maps, bool) or config.head_maps < 0:
        raise ValueError(f"satkern analyze: --head-maps must be a whole number >= 0 (utterances); got {config.head_maps!r}")
    if config.maps and not config.per_utterance:
        from dataclasses import replace

        config = replace(config, per_utterance=True)  # maps.py picks utterances by their per-utterance values
    dist = _setup_distributed(config.device)
    try:
        return _analyze(config, dist, model, on_batch, log, t_start, satkern)
    finally:
        if dist.initialized_here:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def _analyze(config, dist, model, on_batch, log, t_start, satkern) -> dict:
    rank0 = dist.rank == 0
    if log is None and not rank0:
        log = lambda s: None  # noqa: E731  (rank 0 speaks for the job)
    job = CorpusJob(config, "analyze", log)
    log = job.log
    out = job.out
    device = job.preflight()
    if device.type == "cuda" and dist.enabled:
        device = job.device = torch.device(f"cuda:{dist.local_rank}")
    stats = tuple(config.stats)
    bad = [s for s in stats if s not in STAT_NAMES]
    if bad:
        raise ValueError(f"argument --stats: unknown statistics {bad}; choose from {', '.join(STAT_NAMES)}")
    if not config.min_seconds >= 0:
        raise ValueError(f"argument --min-seconds: expected a number of seconds >= 0; got {config.min_seconds}")

    ck = _Checkpointer(out, dist)
    job.refuse_previous_run(["summary.json", "checkpoint/rank*-of-*.pt"], resume=config.resume)

    # ---------------------------------------------------------------- corpus
    corpus = job.discover(max_utterances=config.max_utterances, min_seconds=config.min_seconds)
    found_count = job.utterances_found
    if not corpus.utterances:
        raise job.nothing_usable()
    use_labels = config.phone_relations and corpus.has_alignments
    label_map = fold_39 if config.fold_39 else None
    labels: List[str] = []
    if use_labels:
        found = collect_labels(corpus, tier=config.phone_tier, label_map=label_map)
        labels = list(TIMIT39) if config.fold_39 else found
        extra = sorted(set(found) - set(labels))
        if extra:
            raise ValueError(f"satkern analyze: labels outside the 39-class set after folding: {extra}")
        if not labels:
            use_labels = False  # no utterance kept a usable alignment

    # ---------------------------------------------------------------- model
    model = job.load_model(model, s3prl_whole_sequence=config.s3prl_whole_sequence,
                           meaning="the numbers below describe an untrained network, not a trained SAT.")
    rate = int(model.sample_rate)
    notes = []

    label_index = {l: i for i, l in enumerate(labels)}
    utts = job.drop_frameless(corpus.utterances)  # 0 model frames: skipped up front
    if not utts:
        raise job.nothing_usable()
    unknown = sorted(set(config.head_maps_for) - {u.uid for u in utts})
    if unknown:
        raise ValueError(f"argument --head-maps-for: expected utterance ids of this corpus; not found (or skipped): "
                         f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''} (ids look like {utts[0].uid!r})")
    unaligned = sum(1 for u in utts if not u.alignment) if use_labels else 0

    fingerprint = dict(config.fingerprint_fields(), weights=job.weights_checksum(), labels=labels,
                       utterances=hashlib.sha256("\n".join(u.uid for u in utts).encode()).hexdigest()[:16],
                       world=dist.world)

    # ---------------------------------------------------------------- resume state
    acc = None
    finished: set = set()
    mine_finished: List[str] = []
    load_skipped: List[dict] = []
    parts: List[str] = []
    prior_conversions: List[dict] = []
    prior_unaligned: List[str] = []
    prior_chunked: List[str] = []
    prior_nan: List[dict] = []
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
                    prior_conversions = list(st.get("conversions", []))
                    prior_unaligned = list(st.get("unaligned", []))
                    prior_chunked = list(st.get("chunked", []))
                    prior_nan = list(st.get("nan", []))
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
    n_total = len(utts)

    kept_count = len(finished)  # utterances the checkpoint on disk holds (with --resume: the one resumed from)

    def kept_note(where: str = "") -> str:
        if not kept_count:
            return "nothing kept (no checkpoint written yet)"
        return f"{kept_count} of {n_total} utterances kept{where}; resume with --resume"

    # SIGINT / SIGTERM from here on: the batch being computed finishes, a checkpoint is written and the job
    # stops (satkern.jobs.interrupt); a second signal stops at once, the last checkpoint kept
    with stop_between("batch", note=kept_note(" in the checkpoint")) as stop:
        # ------------------------------------------------------------ output folder (only now: a job that
        # fails on its corpus, model or arguments leaves nothing behind)
        if dist.enabled:
            import torch.distributed as tdist

            tdist.barrier()  # every rank has checked before rank 0 clears anything
        created_ck = not ck.dir.exists()
        if rank0:  # a fresh run leaves no output of an earlier one behind
            job.prepare_folder(STALE_OUTPUTS, resume=config.resume)
            ck.parts_dir.mkdir(parents=True, exist_ok=True)
        if dist.enabled:
            tdist.barrier()

        ds = BatchDataset(batches, rate, with_alignments=corpus.has_alignments, tier=config.phone_tier,
                          label_map=label_map, allow_resample=config.allow_resample)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=config.workers,
                                             collate_fn=_identity, prefetch_factor=2 if config.workers else None,
                                             persistent_workers=False,
                                             worker_init_fn=ignore_stop_signals if config.workers else None)

        n_skipped_now = len(job.skipped)
        log(f"satkern analyze: {model.name} ({model.family}, {rate} Hz, {model.frame_stride} samples/frame) on "
            f"{corpus.layout} corpus {config.corpus}: {found_count} utterances found"
            + (f" ({config.max_utterances} at most analyzed)" if config.max_utterances is not None else "")
            + (f", {n_skipped_now} skipped so far (reasons in summary.json)" if n_skipped_now else "")
            + (f", {len(finished)} done before" if finished else "")
            + f", {len(todo)} to run ({shard_seconds:.1f} s of audio"
            + (" on this rank" if dist.enabled else "") + ")"
            + (f"; phone relations over {len(labels)} labels" if use_labels else "; no alignments: no phone relations")
            + (f" ({unaligned} utterances without an alignment count in G/V/D/W only)" if unaligned else "")
            + (f"; rank {dist.rank}/{dist.world}" if dist.enabled else ""))

        # ------------------------------------------------------------ run
        h = satkern.patch(model, stats=stats, backend=config.backend)
        if acc is None:
            acc = Accumulator(h.num_layers, h.num_heads, len(labels) if use_labels else 0)
        acc.check_shape(h.num_layers, h.num_heads, len(labels) if use_labels else 0)
        rows: List[dict] = []
        conversions: List[dict] = list(prior_conversions)  # resampled / down-mixed utterances
        unaligned_done: List[str] = list(prior_unaligned)  # analyzed without an alignment (not in the maps)
        chunked_done: List[str] = list(prior_chunked)  # run in s3prl sequence_length chunks
        nan_done: List[dict] = list(prior_nan)  # utterances whose attention had NaN rows, and where
        wait_s = load_s = compute_s = 0.0
        audio_seconds = 0.0  # processed in this run (this rank)
        t_run = time.perf_counter()
        last_ck = time.perf_counter()
        # progress in audio seconds with an ETA, long inputs announced: rank 0 speaks for the job (its shard)
        progress = job.audio_progress("analyze", shard_seconds) if rank0 else AudioProgress(
            "analyze", shard_seconds, enabled=False, log=log)
        n_checkpointed = len(mine_finished)

        def checkpoint():
            # the part files first, then the rank's .pt naming them (the manifest: --resume reads only the
            # parts it names, so a part written before a kill that the .pt does not name is never used)
            nonlocal rows, last_ck, n_checkpointed, kept_count
            if rows:
                name = f"rank{dist.rank}-{len(parts):06d}.parquet"
                write_utterances(ck.parts_dir / name, rows)
                parts.append(name)
                rows = []
            ck.save({"version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "acc": acc.state(),
                     "finished": mine_finished, "skipped": load_skipped, "parts": parts,
                     "conversions": conversions, "unaligned": unaligned_done, "chunked": chunked_done,
                     "nan": nan_done, "elapsed": prior_elapsed + time.perf_counter() - t_run})
            last_ck = time.perf_counter()
            n_checkpointed = len(mine_finished)
            kept_count = len(set(finished) | set(mine_finished))
            stop.note = kept_note(" in the last checkpoint")

        b_index = 0
        try:
            it = iter(loader)
            while True:
                if stop:  # a signal came: keep what is finished, then stop
                    if len(mine_finished) > n_checkpointed:
                        checkpoint()
                    raise stop.interrupted(f"interrupted: {kept_note()}" if kept_count else
                                           "interrupted before the first batch finished; nothing kept")
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
                        if model.num_chunks(len(it_.waveform)) > 1:
                            chunked_done.append(it_.uid)
                        if it_.source_rate != rate or it_.channels != 1:
                            conversions.append({"utterance": it_.uid, "path": it_.path,
                                                "sample_rate": it_.source_rate, "channels": it_.channels,
                                                "resampled": it_.source_rate != rate, "downmixed": it_.channels != 1})
                batch_audio = sum(len(g.waveform) for g in good) / rate
                if good:
                    progress.before([(g.path, len(g.waveform) / rate, *job.frames_of(len(g.waveform)))
                                     for g in good])
                    inputs, frame_lengths = model.prepare([g.waveform for g in good])
                    if use_labels:
                        T = int(frame_lengths.max())
                        W = torch.zeros(len(good), T, len(labels), dtype=torch.float32)
                        for i, g in enumerate(good):
                            n = int(frame_lengths[i])
                            if g.segments is None:  # no alignment: in G/V/D/W, left out of the relation maps
                                unaligned_done.append(g.uid)
                                continue
                            W[i, :n] = model.label_weights(g.segments, len(g.waveform), label_index)
                        h.set_labels(W.to(device))
                    try:
                        with torch.inference_mode():
                            model.forward(inputs)  # GroupNorm front ends run per utterance: batching changes nothing
                    except BackendUnavailable as e:
                        raise backend_error(config.backend, e) from None
                    m = h.metrics  # warns once if a head had a NaN row
                    lengths = h.lengths
                    nan = h.nan_heads
                    for i in nan.any(-1).any(-1).nonzero().flatten().tolist():
                        nan_done.append({"utterance": good[i].uid,
                                         "heads": [[int(l), int(hd)] for l, hd in nan[i].nonzero().tolist()]})
                    prm = (h.prm_counts, h.prm_base, h.prm_utterances) if use_labels else None
                    acc.add(m, lengths, prm, audio_seconds=batch_audio)
                    h.reset()
                    mine_finished.extend(g.uid for g in good)
                    audio_seconds += batch_audio
                    if config.per_utterance:
                        for i, g in enumerate(good):
                            for l in range(h.num_layers):
                                for hd in range(h.num_heads):
                                    rows.append({"utterance": g.uid, "duration": len(g.waveform) / rate,
                                                 "frames": int(lengths[i]), "layer": l, "head": hd, **{k: (float(getattr(m, k)[i, l, hd])
                                                                   if getattr(m, k) is not None else float("nan"))
                                                                for k in METRICS}})
                    progress.after(batch_audio)
                compute_s += time.perf_counter() - t1
                due = (time.perf_counter() - last_ck >= config.checkpoint_seconds
                       or (config.checkpoint_batches and (b_index + 1) % config.checkpoint_batches == 0))
                if due:
                    checkpoint()
                if on_batch is not None:
                    on_batch(b_index, [it_.uid for it_ in items])
                b_index += 1
            checkpoint()
        except BaseException:
            if len(mine_finished) == n_prior and not finished and rank0:
                job.undo_folder([ck.dir] if created_ck else [])  # failed before its first batch
            raise
        finally:
            h.remove()
            progress.close()
    run_s = time.perf_counter() - t_run

    # ---------------------------------------------------------------- reduce
    all_skipped = load_skipped
    all_parts = parts
    all_conversions = conversions
    all_unaligned = unaligned_done
    all_chunked = chunked_done
    all_nan = nan_done
    n_done = len(mine_finished) - n_prior
    timing = {"wait_s": wait_s, "load_s": load_s, "compute_s": compute_s, "run_s": run_s}
    if dist.enabled:
        import torch.distributed as tdist

        acc.all_reduce(device if device.type == "cuda" else torch.device("cpu"))
        gathered = [None] * dist.world
        tdist.all_gather_object(gathered, {"skipped": load_skipped, "parts": parts, "done": n_done,
                                           "timing": timing, "audio": audio_seconds, "conversions": conversions,
                                           "unaligned": unaligned_done, "chunked": chunked_done,
                                           "nan": nan_done})
        all_skipped = [s for g in gathered for s in g["skipped"]]
        all_conversions = [c for g in gathered for c in g["conversions"]]
        all_unaligned = [u for g in gathered for u in g["unaligned"]]
        all_chunked = [u for g in gathered for u in g["chunked"]]
        all_nan = [u for g in gathered for u in g["nan"]]
        all_parts = [p for g in gathered for p in g["parts"]]
        n_done = sum(g["done"] for g in gathered)
        audio_seconds = sum(g["audio"] for g in gathered)
        timing = {k: max(g["timing"][k] for g in gathered) for k in timing}

    job.skipped.extend(all_skipped)  # the files that failed to load, on every rank
    if int(acc.n_utterances) == 0:
        if rank0:
            job.undo_folder([ck.dir])
        raise job.nothing_usable()

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
        head_maps_info = None
        if config.head_maps or config.head_maps_for:
            from .head_maps import write_head_maps

            head_maps_info = write_head_maps(out / "head_maps.npz", model=model, utterances=utts, n=config.head_maps,
                                             uids=list(config.head_maps_for), heads=heads, categories=cats,
                                             model_spec=config.model, weights_checksum=fingerprint["weights"],
                                             with_alignments=corpus.has_alignments, tier=config.phone_tier,
                                             label_map=label_map, allow_resample=config.allow_resample,
                                             backend=config.backend, log=log)
        skipped = job.skipped
        proc_audio = audio_seconds
        job.record_backends(h)
        summary = job.summary(
            model=model.chunking_record(len(all_chunked)),
            corpus={"utterances_found": found_count, "alignments": bool(corpus.has_alignments),
                    "fold_39": config.fold_39, "labels": labels},
            counts={"utterances_found": found_count, "utterances_analyzed": int(acc.n_utterances),
                    "utterances_skipped": len(skipped), "utterances_in_prm": int(acc.prm_n),
                    "utterances_without_alignment": len(all_unaligned),
                    "utterances_resampled": sum(1 for c in all_conversions if c["resampled"]),
                    "utterances_downmixed": sum(1 for c in all_conversions if c["downmixed"]),
                    "utterances_with_nan_attention": len(all_nan),
                    "frames": int(acc.frames)},
            conversions=sorted(all_conversions, key=lambda c: c["utterance"]),
            without_alignment=sorted(all_unaligned),
            nan_attention=sorted(all_nan, key=lambda r: r["utterance"]),
            audio_hours=acc.audio_seconds / 3600.0,
            audio_hours_this_run=proc_audio / 3600.0,
            elapsed_s=elapsed,
            throughput_audio_s_per_s=(proc_audio / run_s) if run_s > 0 else None,
            loader={"workers": config.workers, **timing,
                    "wait_fraction": timing["wait_s"] / run_s if run_s else None,
                    "busy_fraction": (timing["load_s"] / (run_s * max(config.workers, 1))) if run_s else None},
            categories=({c: cats.count(c) for c in ("global", "vertical", "diagonal")} if cats else None),
            most=_most_heads(heads),
            stats=list(stats),
            notes=notes,
            maps=maps_info,
            head_maps=head_maps_info,
            processes=dist.world,
            resumed=bool(finished),
            utterances_this_run=n_done,
            config={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            outputs=sorted(p.name for p in out.iterdir() if p.is_file() and p.suffix in (".csv", ".npz", ".parquet")),
        )
        summary["outputs"] = sorted(set(summary["outputs"]) | {"summary.json"})
        summary["git_commit"] = summary["commit"]  # the name analyze summaries had before the shared schema
        job.write_summary(summary)
        c = summary["counts"]
        log(f"satkern analyze: {int(acc.n_utterances)} utterances ({summary['audio_hours']:.4f} h of audio) in "
            f"{elapsed:.1f} s; {len(skipped)} skipped; {c['utterances_resampled']} resampled, "
            f"{c['utterances_downmixed']} down-mixed to mono"
            + (f"; {c['utterances_without_alignment']} without an alignment (not in the relation maps)"
               if c["utterances_without_alignment"] else "")
            + (f"; {c['utterances_with_nan_attention']} with NaN attention (NaN G/V of those heads; "
               f"summary.json nan_attention)" if c["utterances_with_nan_attention"] else "")
            + (f"; s3prl sequence_length {summary['model']['s3prl']['sequence_length']}: "
               f"{summary['model']['s3prl']['utterances_chunked']} utterances run in chunks"
               if model.chunks_long_inputs else "") + f"; outputs in {out}")
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()
    if rank0 and not config.keep_checkpoint and ck.dir.exists():
        import shutil

        shutil.rmtree(ck.dir, ignore_errors=True)  # finished: the outputs hold everything
    return summary if summary is not None else {"rank": dist.rank}


def _most_heads(heads: dict) -> dict:
    """``{"global" | "vertical" | "diagonal": {"layer", "head", "metric", "value"}}``: the head with the largest
    corpus G, V, D (the heads ``--maps 1`` shows; NaN heads never, ties by (layer, head))."""
    from .maps import choose_heads

    return {role: {"layer": int(layer), "head": int(head), "metric": metric, "value": float(value)}
            for role, metric, layer, head, value in choose_heads(heads, 1)}

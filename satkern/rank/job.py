"""The ranking job (``satkern rank``): a model and a corpus in, pruning curves, figures and a summary out.

Outputs in ``out`` (read by ``satkern report``; names fixed):

* ``curves.csv``: ``order, seed, step, n_pruned, pruned_heads ("L:H;L:H;..."), span, span_mode, task,
  value, forward_s_per_audio_s, forward_s_per_audio_s_min, forward_spread, timing_rounds, attention_share``
  (one row per point and task; the timing columns: every point timed in ``timing_rounds`` interleaved
  rounds after all points' probes, the median, the minimum and (max - min) / median, see
  :mod:`satkern.rank.timing`);
* ``summary.json``: ``{"version": 1, "kind": "rank", model, corpus, device, versions, commit, seeds,
  tasks, skipped_tasks, orders, step, spans, wall_seconds, heads_from, ...}``;
* ``fig5.png/svg`` (one panel per task, a line per order), ``fig6a.png/svg`` (rank by G against rank
  by W, the first pruned heads coloured), when there are head-pruning curves;
* ``heads.csv`` when the head metrics were computed here (not given with ``heads_from``);
* ``points/``: one JSON file per finished point, written atomically, and ``timing.json`` (the timing
  pass, once every point is done); ``resume=True`` reuses them.

Splits (``train_split`` / ``test_split``): ``NAME`` is every utterance whose id starts with the folder
``NAME`` (case-insensitive: TIMIT ``TRAIN``/``TEST``, a LibriSpeech subset), ``*`` every utterance;
either may end in a slice ``[a:b]`` of fractions in [0, 1] taken per speaker over the speaker's
utterances sorted by id (``TRAIN[:0.7]`` and ``TRAIN[0.7:]`` split every training speaker's
utterances 70/30, so both splits share speakers). ``train_seconds`` / ``test_seconds`` keep a
subset: utterances taken in turn from each speaker (sorted by id) until the audio reaches it.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..jobs import CorpusJob, CorpusJobConfig, atomic_write_bytes, atomic_write_text, stop_between
from .curves import (CURVE_COLUMNS, PointStore, RankSetup, attach_timings, build_orders, check_spans, check_tasks,
                     head_pruning_curves, span_pruning_curves)
from .orders import ORDERS, check_orders, pruning_steps, read_heads_csv
from .probes import PROBE_STEPS, TASKS, load_probe_utterances
from .timing import DEFAULT_ROUNDS, WIDE_SPREAD, check_rounds

DEFAULT_SPANS = (1, 2, 4, 8, 16, 32, 64)
# what a fresh run removes from --out before it starts (glob patterns; --resume keeps them)
STALE_OUTPUTS = ("curves.csv", "summary.json", "heads.csv", "fig5.png", "fig5.svg", "fig6a.png", "fig6a.svg",
                 "points/*.json")
RANDOM_WEIGHTS_MEANING = "the curves show the pipeline, not a finding."


@dataclass
class RankConfig(CorpusJobConfig):
    """Everything :func:`rank` needs (the CLI maps its options one-to-one onto these); the options every
    corpus job shares (model, corpus, out, device, backend, seed, ...) are :class:`CorpusJobConfig`'s."""

    heads_from: Optional[str] = None
    orders: Sequence[str] = ("G", "V", "D", "W", "random")
    step: int = 4
    random_seeds: int = 3
    spans: Sequence[int] = DEFAULT_SPANS
    span_modes: Sequence[str] = ("zero",)
    tasks: Sequence[str] = tuple(TASKS)
    train_split: str = "TRAIN"
    test_split: str = "TEST"
    train_seconds: Optional[float] = None
    test_seconds: Optional[float] = None
    probe_seed: int = 0
    probe_steps: int = PROBE_STEPS
    batch_seconds: float = 40.0
    timing_seconds: float = 30.0
    timing_rounds: int = DEFAULT_ROUNDS
    cache_layers: bool = True
    threads: Optional[int] = None  # torch intra-op threads for the run (None: torch's default)
    fold_39: bool = False
    resume: bool = False


class RankResumeError(ValueError):
    pass


# ----------------------------------------------------------------------------------- validation
def validate_config(c: RankConfig) -> None:
    """Every argument checked before any work (a bad one never stops a run midway)."""
    try:
        check_orders(c.orders)
    except ValueError as e:
        raise ValueError(f"argument --by: {e}") from None
    try:
        check_tasks(c.tasks)
    except ValueError as e:
        raise ValueError(f"argument --tasks: {e}") from None
    if isinstance(c.step, bool) or not isinstance(c.step, int) or c.step < 1:
        raise ValueError(f"argument --step: must be a positive int (heads pruned per step); got {c.step!r}")
    if "random" in c.orders and (isinstance(c.random_seeds, bool) or not isinstance(c.random_seeds, int)
                                 or c.random_seeds < 1):
        raise ValueError(f"argument --random-seeds: must be a positive int; got {c.random_seeds!r}")
    try:
        check_spans(c.spans)
    except ValueError as e:
        raise ValueError(f"argument --span: {e}") from None
    from ..ops import SPAN_MODES

    bad = [m for m in c.span_modes if m not in SPAN_MODES]
    if bad:
        raise ValueError(f"argument --span-mode: unknown mode(s) {bad}; choose from {', '.join(SPAN_MODES)}")
    for name in ("train_seconds", "test_seconds"):
        v = getattr(c, name)
        if v is not None and not v > 0:
            raise ValueError(f"argument --{name.replace('_', '-')}: must be a positive number of seconds; got {v!r}")
    if c.threads is not None and (isinstance(c.threads, bool) or not isinstance(c.threads, int) or c.threads < 1):
        raise ValueError(f"argument --threads: must be a positive int; got {c.threads!r}")
    try:
        check_rounds(c.timing_rounds)
    except ValueError as e:
        raise ValueError(f"argument --timing-rounds: {e}") from None
    if isinstance(c.probe_steps, bool) or not isinstance(c.probe_steps, int) or c.probe_steps < 1:
        raise ValueError(f"argument --probe-steps: must be a positive int; got {c.probe_steps!r}")
    parse_split(c.train_split, "--train-split")
    parse_split(c.test_split, "--test-split")


_SPLIT_RE = re.compile(r"^(?P<name>[^\[\]]+)(\[(?P<a>[0-9.]*):(?P<b>[0-9.]*)\])?$")


def parse_split(spec: str, arg: str = "split") -> Tuple[str, float, float]:
    m = _SPLIT_RE.match(str(spec).strip())
    if not m:
        raise ValueError(f"argument {arg}: expected NAME, *, or NAME[a:b] with fractions a, b in [0, 1]; got {spec!r}")
    try:
        a = float(m["a"]) if m["a"] else 0.0
        b = float(m["b"]) if m["b"] else 1.0
    except ValueError:
        raise ValueError(f"argument {arg}: bad slice in {spec!r}; expected fractions like [0:0.7]") from None
    if not 0.0 <= a < b <= 1.0:
        raise ValueError(f"argument {arg}: the slice [a:b] needs 0 <= a < b <= 1; got {spec!r}")
    return m["name"].strip(), a, b


def select_split(utterances, spec: str, arg: str = "split"):
    """The utterances of a split spec (see the module docstring), sorted by id."""
    name, a, b = parse_split(spec, arg)
    if name == "*":
        chosen = list(utterances)
    else:
        chosen = [u for u in utterances if u.uid.replace("\\", "/").split("/")[0].lower() == name.lower()]
    by_speaker: Dict[Optional[str], list] = {}
    for u in sorted(chosen, key=lambda u: u.uid):
        by_speaker.setdefault(u.speaker, []).append(u)
    out = []
    for spk, us in by_speaker.items():
        n = len(us)
        out += us[int(round(a * n)):int(round(b * n))]
    return sorted(out, key=lambda u: u.uid)


def limit_seconds(utterances, seconds: Optional[float]):
    """Utterances taken in turn from each speaker (ids sorted) until their audio reaches ``seconds``."""
    if seconds is None:
        return list(utterances)
    queues: Dict[Optional[str], list] = {}
    for u in sorted(utterances, key=lambda u: u.uid):
        queues.setdefault(u.speaker, []).append(u)
    order = sorted(queues, key=lambda s: (s is None, str(s)))
    out, total, i = [], 0.0, 0
    while total < seconds and any(queues.values()):
        q = queues[order[i % len(order)]]
        if q:
            u = q.pop(0)
            out.append(u)
            total += u.duration
        i += 1
    return sorted(out, key=lambda u: u.uid)


# ----------------------------------------------------------------------------------- outputs
def _write_figure(fig, base: Path) -> List[str]:
    import matplotlib

    names = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
        buf = io.BytesIO()
        # no date, no software stamp, fixed SVG element ids: the same curves give the same bytes
        with matplotlib.rc_context({"svg.hashsalt": "satkern-rank"}):
            fig.savefig(buf, format=ext, metadata=meta, dpi=120)
        atomic_write_bytes(base.with_suffix("." + ext), buf.getvalue())
        names.append(base.name + "." + ext)
    return names


def _fingerprint(config: RankConfig, job: CorpusJob, train, test, label_index, spec_head) -> dict:
    from ..provenance import weights_checksum as _weights_checksum

    def ids(us):
        return hashlib.sha256("\n".join(f"{u.uid}:{u.num_samples}" for u in us).encode()).hexdigest()[:16]

    return {"weights": job.weights_checksum(), "train": ids(train), "test": ids(test),
            "labels": sorted(label_index or {}), "tasks": list(config.tasks), "probe_seed": config.probe_seed,
            "probe_steps": config.probe_steps, "backend": config.backend,
            "spec_head": None if spec_head is None else _weights_checksum(spec_head),
            "timing_seconds": config.timing_seconds, "threads": config.threads}


def rank(config: RankConfig, *, model=None, spec_head=None, on_point: Optional[Callable[[dict], None]] = None,
         log: Optional[Callable[[str], None]] = None) -> dict:
    """Run the ranking job; returns the summary (also written to ``summary.json``).

    ``model``: an already loaded :class:`satkern.models.SpeechModel` (else ``config.model`` is loaded);
    ``spec_head``: its pre-training head (else read from the checkpoint file ``config.model``, if any);
    ``on_point(info)``: called after every point (tests raise there to simulate a kill).
    """
    validate_config(config)
    config.orders = check_orders(config.orders)
    config.tasks = check_tasks(config.tasks)
    threads_before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _rank(config, model, spec_head, on_point, log)
    finally:
        torch.set_num_threads(threads_before)


def _rank(config, model, spec_head, on_point, log) -> dict:
    from ..analysis.output import write_heads_csv
    from ..corpus.phones import fold_39
    from ..metrics import categorize
    from .figures import figure5, figure6a
    from .gradient import GRADIENT_PATHS, gradient_importance

    t_start = time.perf_counter()
    job = CorpusJob(config, "rank", log)
    log = job.log
    out = job.out
    job.preflight()
    job.refuse_previous_run(["summary.json", "points/*.json"], resume=config.resume)
    if config.heads_from and Path(config.heads_from).resolve() == (out / "heads.csv").resolve() \
            and config.overwrite:
        raise ValueError("argument --heads-from: must not be the heads.csv in --out when --overwrite clears it")
    prior_wall = 0.0
    if config.resume and (out / "progress.json").exists():
        try:
            prior_wall = float(json.loads((out / "progress.json").read_text()).get("wall_seconds", 0.0))
        except (OSError, ValueError):
            prior_wall = 0.0

    # ------------------------------------------------------------------ corpus + splits
    corpus = job.discover()
    utts = corpus.utterances
    train_u = limit_seconds(select_split(utts, config.train_split, "--train-split"), config.train_seconds)
    test_u = limit_seconds(select_split(utts, config.test_split, "--test-split"), config.test_seconds)
    if not train_u:
        raise ValueError(f"argument --train-split: {config.train_split!r} selects no utterance of {config.corpus}")
    if not test_u:
        raise ValueError(f"argument --test-split: {config.test_split!r} selects no utterance of {config.corpus}")
    both = {u.uid for u in train_u} & {u.uid for u in test_u}
    if both:
        raise ValueError(f"arguments --train-split / --test-split: {len(both)} utterances are in both splits "
                         f"(e.g. {sorted(both)[0]}); the probes need disjoint splits")

    # ------------------------------------------------------------------ model
    model = job.load_model(model, meaning=RANDOM_WEIGHTS_MEANING)
    notes: List[str] = []
    if spec_head is None:  # the checkpoint's own (a file given as --model, or the file behind a shipped name)
        spec_head = model.pretraining_head(checkpoint=config.model if Path(config.model).is_file() else None,
                                           trust=config.trust_checkpoint)
    label_map = fold_39 if config.fold_39 else None
    with_align = corpus.has_alignments
    train, skipped_tr = load_probe_utterances(job.drop_frameless(train_u), model.sample_rate,
                                              with_alignments=with_align, label_map=label_map, tier=config.phone_tier)
    test, skipped_te = load_probe_utterances(job.drop_frameless(test_u), model.sample_rate,
                                             with_alignments=with_align, label_map=label_map, tier=config.phone_tier)
    for s in skipped_tr + skipped_te:
        job.skip(s["utterance"], s["path"], s["reason"])
    if not train or not test:
        raise ValueError("satkern rank: after skipping unreadable files, a split has no utterance left")
    job.prepare_folder(STALE_OUTPUTS, resume=config.resume, keep=[config.heads_from] if config.heads_from else [])

    setup = RankSetup(model, train, test, tasks=config.tasks, probe_seed=config.probe_seed,
                      probe_steps=config.probe_steps, spec_head=spec_head, device=config.device,
                      backend=config.backend, batch_seconds=config.batch_seconds,
                      timing_seconds=config.timing_seconds, timing_rounds=config.timing_rounds,
                      cache_layers=config.cache_layers)
    fingerprint = _fingerprint(config, job, train, test, setup.label_index, spec_head)
    setup.store = PointStore(out, fingerprint)
    if config.resume and (out / "progress.json").exists():
        old = json.loads((out / "progress.json").read_text()).get("fingerprint")
        if old is not None and old != fingerprint:
            diff = sorted(k for k in fingerprint if old.get(k) != fingerprint[k])
            raise RankResumeError(f"satkern rank --resume: {out} holds a run of another job (differs in {diff}); "
                                  f"use another --out or --overwrite")

    def save_progress():
        atomic_write_text(out / "progress.json", json.dumps(
            {"fingerprint": fingerprint, "wall_seconds": prior_wall + time.perf_counter() - t_start}) + "\n")

    save_progress()

    # ------------------------------------------------------------------ scores and orders
    L, H = model.num_layers, model.num_heads
    head_orders = [o for o in config.orders]
    scores: Dict[str, np.ndarray] = {}
    if head_orders:  # G and W also draw Fig. 6a, so the head metrics are read or computed for every run
        if config.heads_from:
            scores = read_heads_csv(config.heads_from, num_layers=L, num_heads=H)
            heads_from = str(config.heads_from)
        else:
            table = setup.head_scores()
            scores = {k: table[k] for k in ("G", "V", "D", "W")}
            cats = categorize(torch.from_numpy(scores["G"]), torch.from_numpy(scores["V"]),
                              torch.from_numpy(scores["D"]))
            write_heads_csv(out / "heads.csv", table, cats)
            heads_from = f"computed here: the unrefined model over the train split ({len(train)} utterances)"
    gradient_info = None
    if "gradient" in head_orders:
        gpath = out / "points" / "gradient_importance.json"
        got = None
        if gpath.exists():
            try:
                rec = json.loads(gpath.read_text())
                if rec.get("fingerprint") == fingerprint:
                    got = np.array(rec["importance"], dtype=np.float64)
            except (OSError, ValueError):
                got = None
        if got is None:
            got = gradient_importance(setup)
            atomic_write_text(gpath, json.dumps({"fingerprint": fingerprint, "importance": got.tolist()}) + "\n")
        scores["gradient"] = got
        gradient_info = {"path": GRADIENT_PATHS["satkern"], "importance": got.tolist()}
    orders = build_orders(head_orders, scores=scores, num_layers=L, num_heads=H, random_seeds=config.random_seeds)

    # ------------------------------------------------------------------ points
    n_head_points = sum(len(pruning_steps(o, config.step)) for _, o in orders.values())
    n_points = n_head_points + len(config.spans) * len(config.span_modes)
    bar = job.progress("rank", total=n_points, unit="point")

    points_done = [0]

    def point_done(info):
        save_progress()
        points_done[0] += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{info['order']} step {info['step']}")
        if on_point is not None:
            on_point(info)
        if stop:  # SIGINT / SIGTERM: every finished point is on disk already (PointStore)
            raise stop.interrupted(f"interrupted: {points_done[0]} of {n_points} points kept; resume with --resume")

    with stop_between("point", note="every finished point is kept; resume with --resume") as stop:
        try:
            tables = [head_pruning_curves(setup, orders, step=config.step, on_point=point_done)]
            if config.spans:
                tables.append(span_pruning_curves(setup, list(config.spans), span_modes=list(config.span_modes),
                                                  on_point=point_done))
        finally:
            if bar is not None:
                bar.close()
    import pandas as pd

    # ------------------------------------------------------------------ timing: every point, interleaved
    n_timed = len(setup._point_kwargs)
    tpath = out / "points" / "timing.json"  # the timing pass of a finished run: a resume reuses it
    timing_id = {"fingerprint": fingerprint, "rounds": config.timing_rounds, "points": sorted(setup._point_kwargs)}
    timings = None
    if tpath.exists():
        try:
            rec = json.loads(tpath.read_text())
            if {k: rec.get(k) for k in timing_id} == timing_id:
                timings = rec["timings"]
        except (OSError, ValueError, KeyError):
            timings = None
    if timings is None:
        tbar = job.progress("timing", total=n_timed * config.timing_rounds, unit="forward") if n_timed else None
        try:
            timings = setup.time_points(on_sample=(lambda: tbar.update(1)) if tbar is not None else None)
        finally:
            if tbar is not None:
                tbar.close()
        atomic_write_text(tpath, json.dumps(dict(timing_id, timings=timings)) + "\n")
    filled = [attach_timings(t, timings) for t in tables if len(t)]
    df = pd.concat(filled, ignore_index=True) if filled else pd.DataFrame(columns=CURVE_COLUMNS)
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.10g")
    atomic_write_text(out / "curves.csv", buf.getvalue())
    figures = []
    head_df = df[df["order"] != "span"]
    if len(head_df):
        figures += _write_figure(figure5(df), out / "fig5")
        if "G" in scores and "W" in scores:
            figures += _write_figure(figure6a(scores["G"], scores["W"], k=config.step), out / "fig6a")
        else:
            notes.append("fig6a needs G and W head scores")

    wall = prior_wall + time.perf_counter() - t_start
    save_progress()
    _record_backends(job, setup.timing_set[0])
    summary = job.summary(
        model={"pretraining_head": spec_head is not None},
        corpus={"alignments": bool(with_align), "labels": sorted(setup.label_index or {}), "fold_39": config.fold_39,
                "train": _split_summary(config.train_split, config.train_seconds, train, model.sample_rate),
                "test": _split_summary(config.test_split, config.test_seconds, test, model.sample_rate)},
        seeds={"random_orders": list(range(config.random_seeds)) if "random" in head_orders else [],
               "probe": config.probe_seed, "model_init": config.seed if model.random_weights else None},
        probe={"steps": config.probe_steps, "phone_and_speaker_frame": "one-hidden-layer ReLU MLP",
               "speaker_utterance": "mean pooling + linear", "standardized_with": "train split mean/std"},
        tasks=[t for t in config.tasks if t not in setup.skipped_tasks],
        skipped_tasks=dict(setup.skipped_tasks),
        orders={label: {"seed": seed, "heads": [f"{l}:{h}" for l, h in o]} for label, (seed, o) in orders.items()},
        gradient=gradient_info,
        step=config.step, spans=list(config.spans), span_modes=list(config.span_modes),
        heads_from=heads_from,
        timing={"subset_seconds": sum(u.num_samples for u in setup.timing_set) / model.sample_rate,
                "what": "patched model forward from prepared inputs (features) to the last layer, per audio "
                        "second; attention_share = time inside the layers' satkern attention calls / that",
                "rounds": config.timing_rounds, "points": n_timed,
                "method": "after every point's probes, k rounds each timing every point once, the order "
                          "rotated by n/k points per round, after one untimed warm-up forward; "
                          "forward_s_per_audio_s = median of k, forward_s_per_audio_s_min = min, "
                          "forward_spread = (max - min) / median (NaN for k = 1), attention_share = median",
                "wide_spread": WIDE_SPREAD,
                "wide_points": int(sum(1 for t in timings.values()
                                       if not t["forward_spread"] <= WIDE_SPREAD))},
        points={"total": n_points, "distinct": len(setup._memo), "computed_this_run": setup.points_computed,
                "reused_from_disk": setup.points_reused, "repeats": n_points - len(setup._memo)},
        wall_seconds=wall,
        notes=notes,
        outputs=sorted({"curves.csv", "summary.json", *figures} | ({"heads.csv"} if (out / "heads.csv").exists()
                                                                    else set())),
    )
    job.write_summary(summary)
    log(f"satkern rank: {points_message(summary['points'])}; {wall:.1f} s; outputs in {out}")
    return summary


def points_message(points: dict) -> str:
    """What the curves' points were, in words whose numbers add up to the total (``summary.json`` ``points``):
    measured in this run, read back from an earlier run's ``points/`` (``--resume``), or a repeat of a point
    already on the curves (the same pruned set and span: every pruning order starts with no head pruned and
    ends with all of them pruned), measured once."""
    total, computed, reused = points["total"], points["computed_this_run"], points["reused_from_disk"]
    repeats = total - computed - reused
    parts = [f"{computed} measured in this run"]
    if reused:
        parts.append(f"{reused} read back from the earlier run in points/ (--resume)")
    if repeats:
        parts.append(f"{repeats} {'repeats' if repeats > 1 else 'a repeat'} of a point already on the curves "
                     f"(every pruning order starts with no head pruned and ends with all pruned), measured once")
    return f"{total} points on the curves: " + "; ".join(parts)


def _record_backends(job: CorpusJob, utterance) -> None:
    """``backend.used`` of the summary: the backends one unrefined patched forward of ``utterance`` runs
    (rank's own patches are made and removed inside the probes, :func:`~satkern.rank.probes.extract_probe_features`)."""
    import satkern

    model = job.model
    inputs, _ = model.prepare([utterance.waveform])
    with satkern.patch(model, stats=(), backend=job.config.backend) as h, torch.inference_mode():
        model(inputs)
    job.record_backends(h)


def _split_summary(spec, seconds, utts, rate) -> dict:
    return {"spec": spec, "max_seconds": seconds, "utterances": len(utts),
            "audio_seconds": sum(u.num_samples for u in utts) / rate,
            "speakers": sorted({u.speaker for u in utts if u.speaker})}


__all__ = ["RankConfig", "rank", "validate_config", "select_split", "limit_seconds", "parse_split", "RankResumeError"]

"""Head-pruning and span-pruning curves (paper sec. 7): probe values after every refinement step.

:class:`RankSetup` holds what does not change between points (the model, the train and test
utterances, phone label index, the pre-training head, the cached model inputs and layer inputs),
:meth:`RankSetup.evaluate` measures one point (a pruned set, or a span) -- features of both
splits from the model refined through :func:`satkern.patch`, the probes trained on the train split
and scored on the test split -- and :func:`head_pruning_curves` / :func:`span_pruning_curves` walk
the orders and spans, returning pandas tables with the columns :data:`CURVE_COLUMNS`. The forward time
per audio second and the attention's share of it are measured afterwards for every point together, on
a fixed timing subset, by interleaved repeats (:meth:`RankSetup.time_points`, :mod:`.timing`), and
:func:`attach_timings` fills them in.

Points are memoized by their refinement (the unpruned point is shared by every order, the
all-pruned point too) and, with a :class:`PointStore`, saved atomically one by one so a killed
run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .orders import Head, format_heads, head_order, pruning_steps
from .probes import (PROBE_STEPS, TASKS, ProbeFeatures, ProbeUtterance, TaskSkipped, extract_probe_features,
                     run_task)
from .timing import DEFAULT_ROUNDS, TIMING_COLUMNS, interleaved_timing

CURVE_COLUMNS = ["order", "seed", "step", "n_pruned", "pruned_heads", "span", "span_mode", "task",
                 "value"] + TIMING_COLUMNS
TIMING_SECONDS = 30.0  # audio seconds of the test split in the per-point timing pass
POINT_VERSION = 2  # 2: a point holds its probe values only (the timing is measured for all points together)


def check_tasks(names: Sequence[str]) -> List[str]:
    names = [str(n).strip() for n in names if str(n).strip()]
    bad = [n for n in names if n not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
    if not names:
        raise ValueError(f"no task given; choose from {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


def check_spans(spans: Iterable) -> List[int]:
    out = []
    for r in spans:
        try:
            if isinstance(r, bool):
                raise TypeError
            v = int(r)
            if v != r and not isinstance(r, str):
                raise TypeError
        except (TypeError, ValueError):
            raise ValueError(f"span must be a non-negative int (frames); got {r!r}") from None
        if v < 0:
            raise ValueError(f"span must be a non-negative int (frames); got {r!r}")
        out.append(v)
    return out


def point_key(pruned: Sequence[Head] = (), span: Optional[int] = None, span_mode: str = "zero") -> str:
    """The identity of a point: its refinement (the pruned set as a set, the span and its mode)."""
    heads = ";".join(f"{l}:{h}" for l, h in sorted(pruned))
    return f"prune=[{heads}] span={'none' if span is None else int(span)} mode={span_mode if span is not None else '-'}"


class PointStore:
    """Finished points as JSON files ``DIR/points/<digest>.json`` (written atomically); a point file
    whose fingerprint differs from the run's is not used."""

    def __init__(self, root, fingerprint: dict):
        self.dir = Path(root) / "points"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint

    def _path(self, key: str) -> Path:
        return self.dir / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".json")

    def get(self, key: str) -> Optional[dict]:
        p = self._path(key)
        if not p.exists():
            return None
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            return None  # a torn or foreign file: measured again
        if rec.get("version") != POINT_VERSION or rec.get("key") != key or rec.get("fingerprint") != self.fingerprint:
            return None
        return rec["result"]

    def put(self, key: str, result: dict) -> None:
        from ..jobs import atomic_write_text

        rec = {"version": POINT_VERSION, "key": key, "fingerprint": self.fingerprint, "result": result}
        atomic_write_text(self._path(key), json.dumps(rec, sort_keys=True) + "\n")


@dataclass
class RankSetup:
    """Everything constant across the points of a ranking run.

    * ``speech_model``: :class:`satkern.models.SpeechModel`;
    * ``train`` / ``test``: :class:`~satkern.rank.probes.ProbeUtterance` lists;
    * ``tasks``: task names (:data:`~satkern.rank.probes.TASKS`); ``probe_seed``, ``probe_steps``;
    * ``label_index``: phone -> index (from both splits' alignments when ``None``);
    * ``spec_head``: the pre-training head for the reconstruction task (``None``: skipped);
    * ``device``, ``backend`` (the :func:`satkern.patch` backend), ``batch_seconds``;
    * ``timing_seconds``: audio of the test split timed per point (full forward, no cache);
      ``timing_rounds``: interleaved rounds of :meth:`time_points` (k samples per point);
    * ``cache_layers``: reuse the inputs of layers before the first refined one (s3prl models).
    """

    speech_model: object
    train: List[ProbeUtterance]
    test: List[ProbeUtterance]
    tasks: Sequence[str] = ("reconstruction", "phone", "speaker-frame", "speaker-utterance")
    probe_seed: int = 0
    probe_steps: int = PROBE_STEPS
    label_index: Optional[Dict[str, int]] = None
    spec_head: Optional[torch.nn.Module] = None
    device: str = "cpu"
    backend: str = "auto"
    batch_seconds: float = 40.0
    timing_seconds: float = TIMING_SECONDS
    timing_rounds: int = DEFAULT_ROUNDS
    cache_layers: bool = True
    store: Optional[PointStore] = None
    skipped_tasks: Dict[str, str] = field(default_factory=dict)
    points_computed: int = 0
    points_reused: int = 0

    def __post_init__(self):
        self.tasks = check_tasks(self.tasks)
        if not self.train or not self.test:
            raise ValueError("satkern rank: the train and the test split each need at least one utterance")
        if self.label_index is None:
            every = self.train + self.test
            if all(u.segments for u in every):
                labels = sorted({s.label for u in every for s in u.segments})
                self.label_index = {l: i for i, l in enumerate(labels)}
        self._memo: Dict[str, dict] = {}
        self._point_kwargs: Dict[str, dict] = {}  # point key -> its patch kwargs, in evaluation order
        self._input_cache = {"train": {}, "test": {}, "timing": {}}
        self._layer_cache = {"train": {}, "test": {}} if self.cache_layers else None
        budget = 0.0
        self.timing_set = []
        for u in sorted(self.test, key=lambda u: u.uid):
            if budget >= self.timing_seconds and self.timing_set:
                break
            self.timing_set.append(u)
            budget += u.num_samples / self.speech_model.sample_rate

    # -------------------------------------------------------------- features
    def features(self, split: str, patch_kwargs: dict) -> ProbeFeatures:
        utts = self.train if split == "train" else self.test
        return extract_probe_features(self.speech_model, utts, patch_kwargs=dict(patch_kwargs, backend=self.backend),
                                      device=self.device, label_index=self.label_index, spec_head=self.spec_head,
                                      batch_seconds=self.batch_seconds, input_cache=self._input_cache[split],
                                      layer_cache=None if self._layer_cache is None else self._layer_cache[split])

    def time_forward(self, patch_kwargs: dict) -> Tuple[float, float]:
        """(forward seconds per audio second, attention share) of one full patched forward over the timing set."""
        f = extract_probe_features(self.speech_model, self.timing_set, patch_kwargs=dict(patch_kwargs, backend=self.backend),
                                   device=self.device, label_index=None, spec_head=None,
                                   batch_seconds=self.batch_seconds, input_cache=self._input_cache["timing"])
        return f.forward_s_per_audio_s, f.attention_share

    def time_points(self, rounds: Optional[int] = None, *, on_sample: Optional[Callable[[], None]] = None
                    ) -> Dict[str, Dict[str, float]]:
        """``{point key: timing columns}`` of every point evaluated so far, by interleaved repeats
        (:func:`satkern.rank.timing.interleaved_timing`, ``rounds`` default ``timing_rounds``)."""
        return interleaved_timing(dict(self._point_kwargs), self.time_forward,
                                  self.timing_rounds if rounds is None else rounds, on_sample=on_sample)

    def head_scores(self, stats=("entropy", "distance", "colmass", "maxweight")) -> Dict[str, np.ndarray]:
        """Corpus G, V, D, W ``[L, H]`` of the unrefined model over the train split (each utterance weighted
        equally, NaN left out: the analysis job's :class:`~satkern.analysis.Accumulator`)."""
        from ..analysis.accumulate import Accumulator

        f = extract_probe_features(self.speech_model, self.train, patch_kwargs={"stats": stats, "backend": self.backend},
                                   device=self.device, label_index=None, batch_seconds=self.batch_seconds,
                                   input_cache=self._input_cache["train"])
        L, H = f.metrics.G.shape[1:]
        acc = Accumulator(L, H)
        acc.add(f.metrics, f.lengths)
        table = acc.heads_table()
        return {k: table[k] for k in ("G", "V", "D", "W")} | {"n_utterances": table["n_utterances"]}

    # -------------------------------------------------------------- one point
    def evaluate(self, pruned: Sequence[Head] = (), span: Optional[int] = None, span_mode: str = "zero") -> dict:
        """``{"values": {task: float}, "skipped": {task: reason}, "point": key}`` of one point; memoized, and
        saved to / taken from the store. Its timing comes later, from :meth:`time_points`."""
        key = point_key(pruned, span, span_mode)
        if key in self._memo:
            return self._memo[key]
        pk = {"prune": set(map(tuple, pruned)) or None}
        if span is not None:
            pk.update(span=int(span), span_mode=span_mode)
        self._point_kwargs[key] = pk
        if self.store is not None:
            got = self.store.get(key)
            if got is not None:
                got = dict(got, point=key)
                self._memo[key] = got
                self.points_reused += 1
                return got
        train = self.features("train", pk)
        test = self.features("test", pk)
        values, skipped = {}, {}
        for task in self.tasks:
            if task in self.skipped_tasks:
                continue
            try:
                v = run_task(task, train, test, seed=self.probe_seed, steps=self.probe_steps)
            except TaskSkipped as e:
                skipped[task] = str(e)
                continue
            values[task] = float(v)
        result = {"values": values, "skipped": skipped}
        if self.store is not None:
            self.store.put(key, result)
        result = dict(result, point=key)
        self._memo[key] = result
        self.points_computed += 1
        return result

    def note_skips(self, result: dict) -> None:
        """Tasks a point skipped are skipped for the rest of the run (the reasons are the data's)."""
        for task, why in result.get("skipped", {}).items():
            self.skipped_tasks.setdefault(task, why)


def _rows(result: dict, *, order: str, seed, step: int, pruned: Sequence[Head], span, span_mode) -> List[dict]:
    rows = []
    for task, value in result["values"].items():
        rows.append({"order": order, "seed": seed, "step": step, "n_pruned": len(pruned),
                     "pruned_heads": format_heads(pruned), "span": span, "span_mode": span_mode, "task": task,
                     "value": value, "point": result["point"]})
    return rows


def _table(rows: List[dict]):
    """The rows as a table: :data:`CURVE_COLUMNS` (timing columns empty) plus ``point`` (the point key,
    which :func:`attach_timings` uses and drops)."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=CURVE_COLUMNS + ["point"])
    df["seed"] = df["seed"].astype("Int64")
    df["span"] = df["span"].astype("Int64")
    return df


def head_pruning_curves(setup: RankSetup, orders: Dict[str, Tuple[Optional[int], List[Head]]], *, step: int = 4,
                        on_point: Optional[Callable[[dict], None]] = None):
    """Cumulative head pruning along each order (``{label: (seed or None, heads in pruning order)}``),
    ``step`` heads per step; a pandas table with :data:`CURVE_COLUMNS` (``order`` = the label's order
    name, ``seed`` its random seed). ``on_point(info)`` is called after every point."""
    rows = []
    for label, (seed, order) in orders.items():
        name = label.split("#")[0]
        for k, pruned in enumerate(pruning_steps(order, step)):
            result = setup.evaluate(pruned)
            setup.note_skips(result)
            rows += _rows(result, order=name, seed=seed, step=k, pruned=pruned, span=None, span_mode=None)
            if on_point is not None:
                on_point({"order": label, "step": k, "n_pruned": len(pruned)})
    return _table(rows)


def span_pruning_curves(setup: RankSetup, spans: Sequence[int], *, span_modes: Sequence[str] = ("zero",),
                        on_point: Optional[Callable[[dict], None]] = None):
    """Every head of every layer limited to abs(q - k) <= r, for each ``r`` in ``spans`` and each mode;
    rows with ``order = "span"``, ``step`` = the index of ``r``, ``n_pruned`` 0."""
    from ..ops import SPAN_MODES

    spans = check_spans(spans)
    bad = [m for m in span_modes if m not in SPAN_MODES]
    if bad:
        raise ValueError(f"unknown span mode(s) {bad}; choose from {', '.join(SPAN_MODES)}")
    rows = []
    for mode in span_modes:
        for k, r in enumerate(spans):
            result = setup.evaluate((), span=r, span_mode=mode)
            setup.note_skips(result)
            rows += _rows(result, order="span", seed=None, step=k, pruned=(), span=r, span_mode=mode)
            if on_point is not None:
                on_point({"order": f"span-{mode}", "step": k, "span": r})
    return _table(rows)


def attach_timings(df, timings: Dict[str, Dict[str, float]]):
    """``df`` (from the curve functions) with its timing columns filled from ``timings`` (``{point key:
    columns}``, :meth:`RankSetup.time_points`) and the ``point`` column dropped: :data:`CURVE_COLUMNS`."""
    df = df.copy()
    for col in TIMING_COLUMNS:
        df[col] = [timings.get(k, {}).get(col, float("nan")) for k in df["point"]]
    df["timing_rounds"] = df["timing_rounds"].astype("Int64")
    return df.drop(columns=["point"])[CURVE_COLUMNS]


def build_orders(names: Sequence[str], *, scores: Optional[Dict[str, np.ndarray]], num_layers: int, num_heads: int,
                 random_seeds: int = 3) -> Dict[str, Tuple[Optional[int], List[Head]]]:
    """``{label: (seed, order)}`` for the named orders; ``random`` expands to ``random_seeds`` seeds
    (labels ``random#0``, ``random#1``, ...)."""
    out = {}
    for name in names:
        if name == "random":
            if isinstance(random_seeds, bool) or not isinstance(random_seeds, int) or random_seeds < 1:
                raise ValueError(f"random seeds must be a positive int; got {random_seeds!r}")
            for s in range(random_seeds):
                out[f"random#{s}"] = (s, head_order("random", num_layers=num_layers, num_heads=num_heads, seed=s))
        else:
            out[name] = (None, head_order(name, scores=scores))
    return out


__all__ = ["CURVE_COLUMNS", "RankSetup", "PointStore", "point_key", "head_pruning_curves", "span_pruning_curves",
           "attach_timings", "build_orders", "check_tasks", "check_spans"]

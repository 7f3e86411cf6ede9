"""The corpus-job runner: the scaffold ``analyze``, ``segment`` and ``rank`` share, written once.

A job (:mod:`satkern.analysis.job`, :mod:`satkern.segment.job`, :mod:`satkern.rank.job`) keeps only its
own work; its config extends :class:`CorpusJobConfig` and it drives a :class:`CorpusJob` in this order:

1. :meth:`CorpusJob.preflight`: ``--device`` and ``--backend`` checked before anything else runs;
2. :meth:`CorpusJob.refuse_previous_run`: an ``--out`` that holds a previous run is refused unless
   ``--resume`` / ``--overwrite`` (nothing written yet);
3. :meth:`CorpusJob.discover`: the corpus' utterances sorted by id, ``max_utterances``, clips shorter
   than ``min_seconds`` skipped with their reason;
4. :meth:`CorpusJob.load_model`: seeded, loaded, on the device;
   :meth:`CorpusJob.drop_frameless`: utterances the model gives 0 frames skipped with their reason;
5. :meth:`CorpusJob.prepare_folder`, once every check has passed: only now is ``--out`` created, an
   earlier run's outputs removed and a model with random weights announced in a banner, so a job
   refused for its arguments, corpus or model prints its one-line error and leaves nothing behind
   (:meth:`CorpusJob.undo_folder` removes what a job that produced nothing created);
6. :meth:`CorpusJob.summary` and :meth:`CorpusJob.write_summary`: the one ``summary.json`` schema.

While it runs, :meth:`CorpusJob.progress` / :meth:`CorpusJob.audio_progress` show progress in audio seconds
and announce very long inputs (:mod:`.progress`); a job whose work can be kept stops cleanly on SIGINT /
SIGTERM between its units inside :func:`~satkern.jobs.interrupt.stop_between` (:mod:`.interrupt`).

Every job's ``summary.json`` starts with the same keys, of the same shapes (the task's keys follow)::

    version   1
    kind      "analyze" | "segment" | "rank"
    model     {spec, name, family, random_weights, sample_rate, frame_stride, layers, heads,
               weights_checksum, ...task fields}
    corpus    {path, layout, ...task fields}
    device    "cpu (x86_64, 2 threads)" | "<GPU name> (cuda)"
    backend   {"requested": "auto", "used": ["cpu"]}   (used: the satkern backends that ran, sorted)
    versions  {python, torch, numpy, satkern, ...}
    commit    git commit of the satkern checkout, or null
    skipped   [{"utterance", "path", "reason"}, ...]   (every file the job could not use, and why)
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import torch

from ..corpus.audio import resampled_length
from ..corpus.readers import Corpus, Utterance, discover_corpus
from ..provenance import device_description, git_commit, versions, weights_checksum
from .files import atomic_write_text, check_out_dir
from .preflight import check_backend, resolve_device
from .progress import AudioProgress

SUMMARY_VERSION = 1
JOB_KINDS = ("analyze", "segment", "rank")


class ResumeError(RuntimeError):
    """A checkpoint in ``--out`` that this job cannot continue (another job wrote it)."""


@dataclass
class CorpusJobConfig:
    """The options every corpus job takes (the CLI maps them one-to-one); a job's config adds its own."""

    model: str
    corpus: str
    out: str
    device: str = "cpu"
    backend: str = "auto"
    layout: Optional[str] = None
    alignments: Optional[str] = None  # folder of TextGrids (MFA output) for librispeech/directory corpora
    phone_tier: Optional[str] = None
    seed: int = 0  # torch seed before building the model (built-in names: random weights)
    trust_checkpoint: bool = False
    overwrite: bool = False
    progress: bool = True


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class CorpusJob:
    """One run of a corpus job: its device, corpus, model, output folder, skip record and summary.

    ``kind``: the job's name in its messages (``satkern <kind>: ...``) and in ``summary.json``
    (satkern's own: :data:`JOB_KINDS`, which ``satkern report`` reads); ``log``: where progress lines go
    (default stderr).
    """

    def __init__(self, config: CorpusJobConfig, kind: str, log: Optional[Callable[[str], None]] = None):
        if not re.fullmatch(r"[a-z][a-z0-9-]*", str(kind)):
            raise ValueError(f"CorpusJob: kind must be a short lower-case name like 'analyze'; got {kind!r}")
        self.config = config
        self.kind = kind
        self.out = Path(config.out)
        self.log = log or _to_stderr
        self.device: Optional[torch.device] = None
        self.corpus: Optional[Corpus] = None
        self.model = None  # SpeechModel, once loaded
        self.utterances_found = 0
        self.backends_used: set = set()
        self.created_out = False
        self._checksum: Optional[str] = None
        self._meaning = ""

    # ------------------------------------------------------------------ 1. arguments
    def preflight(self) -> torch.device:
        """Refuse a device or backend that cannot run here (``ValueError`` naming the argument)."""
        self.device = resolve_device(self.config.device)
        check_backend(self.config.backend, self.device)
        return self.device

    # ------------------------------------------------------------------ 2. output folder guard
    def refuse_previous_run(self, markers: Sequence[str], *, resume: bool = False, resumable: bool = True) -> None:
        """``FileExistsError`` when ``--out`` holds a previous run (a file matching one of the glob patterns
        ``markers``) and neither ``resume`` nor ``overwrite`` was asked for; ``ValueError`` when ``--out`` is a file."""
        check_out_dir(self.out)
        if resume or self.config.overwrite or not self.out.is_dir():
            return
        if any(next(self.out.glob(m), None) is not None for m in markers):
            how = "pass --resume to continue it or --overwrite to start over" if resumable else \
                "pass --overwrite to replace it"
            raise FileExistsError(f"satkern {self.kind}: {self.out} holds a previous run; {how}")

    # ------------------------------------------------------------------ 3. corpus
    def discover(self, *, max_utterances: Optional[int] = None, min_seconds: Optional[float] = None) -> Corpus:
        """The corpus (``corpus.utterances`` sorted by id, the first ``max_utterances`` of them); clips
        shorter than ``min_seconds`` are skipped with their reason. ``corpus.skipped`` is this job's
        skip record from here on (:attr:`skipped`)."""
        c = self.config
        corpus = discover_corpus(c.corpus, layout=c.layout, alignments=c.alignments)
        self.corpus = corpus
        self.utterances_found = len(corpus.utterances) + len(corpus.skipped)
        utts = sorted(corpus.utterances, key=lambda u: u.uid)
        if max_utterances is not None:
            utts = utts[:max_utterances]
        if min_seconds is not None:
            kept = []
            for u in utts:
                if u.num_samples > 0 and u.duration < min_seconds:
                    self.skip(u.uid, u.audio, f"too short: {u.duration:.3f} s, below the minimum clip length of "
                                              f"{min_seconds:g} s (--min-seconds)")
                else:
                    kept.append(u)
            utts = kept
        corpus.utterances = utts
        return corpus

    @property
    def skipped(self) -> List[dict]:
        """Every file this job could not use, ``{"utterance", "path", "reason"}``, in the order met."""
        return self.corpus.skipped

    def skip(self, uid: str, path, reason: str) -> None:
        """Record that an utterance is left out and why (once: a file met again keeps its first reason)."""
        if not self.is_skipped(uid):
            self.corpus.skip(uid, str(path), reason)

    def is_skipped(self, uid: str) -> bool:
        return any(s["utterance"] == uid for s in self.corpus.skipped)

    def nothing_usable(self) -> ValueError:
        """The error for a corpus none of whose utterances could be used: the skip reasons, grouped."""
        corpus, found = self.config.corpus, self.utterances_found
        if not found:
            return ValueError(f"corpus {corpus}: no utterances found (no audio files, or an empty manifest)")
        groups: dict = {}
        for s in self.skipped:
            key = str(s["reason"])
            path = str(s.get("path", ""))
            if path and key.startswith(path + ": "):
                key = key[len(path) + 2:]
            groups.setdefault(key, []).append(s)
        parts = [f"{len(v)} x {k} (e.g. {v[0]['path']})" for k, v in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
        shown = "; ".join(parts[:5]) + (f"; and {len(parts) - 5} other reasons" if len(parts) > 5 else "")
        return ValueError(f"corpus {corpus}: none of its {found} utterances could be {_DONE.get(self.kind, 'used')}; "
                          f"skipped: {shown}")

    # ------------------------------------------------------------------ 4. model
    def load_model(self, model=None, *, meaning: str, **load_kwargs):
        """The job's :class:`~satkern.models.SpeechModel` (``model``, else ``config.model`` loaded after
        seeding torch with ``config.seed``: built-in names get the same random weights on every rank and
        rerun), in eval mode on the job's device. A model with random weights is announced (by
        :meth:`prepare_folder`) in a banner whose last line, ``meaning``, says what the job's numbers mean."""
        from ..models import load_model

        if model is None:
            torch.manual_seed(self.config.seed)
            model = load_model(self.config.model, trust_checkpoint=self.config.trust_checkpoint, **load_kwargs)
        model.model.to(self.device).eval()
        self.model = model
        self._meaning = meaning
        return model

    def drop_frameless(self, utterances: Iterable) -> list:
        """The utterances the model gives at least one frame; the others are skipped with their reason
        (an empty file is left to the loader, which names what is wrong with it)."""
        rate = int(self.model.sample_rate)
        kept = []
        for u in utterances:
            n = resampled_length(u.num_samples, u.sample_rate, rate)
            if u.num_samples > 0 and self.model.num_frames(n) <= 0:
                self.skip(u.uid, u.audio, f"too short for the model ({u.num_samples} samples at {u.sample_rate} Hz "
                                          f"give 0 frames)")
            else:
                kept.append(u)
        return kept

    def weights_checksum(self) -> str:
        """A fingerprint of the model's weights (:func:`satkern.provenance.weights_checksum`), computed once."""
        if self._checksum is None:
            self._checksum = weights_checksum(self.model.model)
        return self._checksum

    # ------------------------------------------------------------------ 5. output folder
    def prepare_folder(self, stale: Sequence[str] = (), *, resume: bool = False, keep: Sequence = ()) -> None:
        """The job starts: a model with random weights is announced; ``--out`` is created and, unless
        ``resume``, the files an earlier run left there (glob patterns ``stale``) are removed, except the
        paths in ``keep`` (an input the job reads from its own folder)."""
        if self.model is not None and self.model.random_weights:
            self.log("=" * 72 + f"\nsatkern {self.kind}: model {self.model.name!r} has RANDOM WEIGHTS (built-in "
                     f"architecture, seed {self.config.seed});\n{self._meaning}\n" + "=" * 72)
        self.created_out = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            return
        kept = {Path(k).resolve() for k in keep}
        for pattern in stale:
            for p in self.out.glob(pattern):
                if p.is_file() and p.resolve() not in kept:
                    p.unlink()

    def undo_folder(self, created: Sequence[Path] = ()) -> None:
        """Remove what a job that produced nothing created: the folders in ``created`` and ``--out``
        itself when this job made it and it is empty."""
        for d in created:
            if Path(d).exists():
                shutil.rmtree(d, ignore_errors=True)
        if self.created_out and self.out.exists() and not any(self.out.iterdir()):
            self.out.rmdir()

    # ------------------------------------------------------------------ running
    def record_backends(self, patch) -> None:
        """Note the satkern backends a :class:`satkern.Patch` of this job ran (``backend.used``)."""
        self.backends_used.update(patch.backends_used)

    def progress(self, desc: str, *, total: Optional[int] = None, items=None, unit: str = "utt"):
        """A progress bar on stderr when ``config.progress``: over ``items`` (returned as they are when
        off), or one to update by hand for ``total`` steps (``None`` when off). Over utterances (``items``
        of :class:`~satkern.corpus.Utterance`, the model loaded) the bar counts audio seconds and a
        very long input is announced (:meth:`audio_progress`), with or without the bar."""
        if items is not None and self.model is not None:
            items = list(items)
            if items and all(isinstance(u, Utterance) for u in items):
                return self._over_utterances(desc, items)
        if not self.config.progress:
            return items
        from tqdm import tqdm

        return tqdm(items, total=total, unit=unit, desc=desc, dynamic_ncols=True, file=sys.stderr)

    def audio_progress(self, desc: str, total_seconds: float) -> AudioProgress:
        """Progress over audio (:class:`satkern.jobs.progress.AudioProgress`): a bar in audio seconds with
        an ETA when ``config.progress``, and the line before an input of more than
        :data:`~satkern.jobs.progress.LONG_INPUT_FRAMES` attention frames (always)."""
        return AudioProgress(desc, total_seconds, enabled=self.config.progress, log=self.log,
                             prefix=f"satkern {self.kind}: ")

    def frames_of(self, num_samples: int) -> Tuple[int, int]:
        """``(frames per layer, chunks)`` of an utterance of ``num_samples`` samples at the model's rate."""
        return int(self.model.num_frames(num_samples)), int(self.model.num_chunks(num_samples))

    def _over_utterances(self, desc: str, utterances: list):
        rate = int(self.model.sample_rate)
        progress = self.audio_progress(desc, sum(u.duration for u in utterances))
        try:
            for u in utterances:
                frames, chunks = self.frames_of(resampled_length(u.num_samples, u.sample_rate, rate))
                progress.before([(u.audio, u.duration, frames, chunks)])
                yield u
                progress.after(u.duration)
        finally:
            progress.close()

    # ------------------------------------------------------------------ 6. summary.json
    def summary(self, *, model: Optional[dict] = None, corpus: Optional[dict] = None, **task) -> dict:
        """The job's ``summary.json`` content: the shared keys (module docstring), the task's ``model`` and
        ``corpus`` fields merged into those records, then the task's own keys."""
        record = {"version": SUMMARY_VERSION, "kind": self.kind,
                  "model": {"spec": self.config.model, **self.model.describe(),
                            "weights_checksum": self.weights_checksum(), **(model or {})},
                  "corpus": {"path": str(self.config.corpus), "layout": self.corpus.layout, **(corpus or {})},
                  "device": device_description(self.device),
                  "backend": {"requested": self.config.backend, "used": sorted(self.backends_used)},
                  "versions": versions(),
                  "commit": git_commit(),
                  "skipped": list(self.skipped)}
        clash = sorted(set(record) & set(task))
        if clash:
            raise ValueError(f"CorpusJob.summary: the task's keys {clash} are the runner's")
        record.update(task)
        return record

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")


# what "could not be <done>" says per job kind
_DONE = {"analyze": "analyzed", "segment": "segmented", "rank": "ranked"}

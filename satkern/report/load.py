"""Reading run folders for the report: what ``satkern analyze``, ``segment`` and ``rank`` wrote.

A folder's kind comes from its ``summary.json`` ``"kind"`` (``"analyze"``, ``"segment"``, ``"rank"``)
when it has one, else from its marker file: ``curves.csv`` (rank), ``scores.csv`` (segment),
``heads.csv`` (analyze folders written before the shared schema have no ``kind``). A folder with
none of them whose sub-folders are run folders (``make demo``'s output) stands for those
sub-folders. Every summary is read in the one schema of :mod:`satkern.jobs.runner`
(:func:`read_summary`; older folders too). Everything read is checked: a missing column, an
unparsable file or a model that differs between the runs is a ``ValueError`` naming the file,
never a half-drawn page.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

HEADS_COLUMNS = ("layer", "head", "G", "V", "D", "W", "category", "n_utterances")
SCORES_COLUMNS = ("features", "head", "alpha", "beta", "precision", "recall", "f1", "r_value")
PR_COLUMNS = ("features", "head", "alpha", "beta", "precision", "recall", "f1", "r_value")
EXAMPLE_KEYS = ("utt_id", "head", "hop", "map", "kf", "score", "true_s", "pred_s")
CURVES_COLUMNS = ("order", "step", "n_pruned", "task", "value")
PRM_KEYS = ("P", "concentration", "labels")
MAPS_KEYS = ("version", "model_name", "weights_checksum", "frame_rate_hz", "logmel_hop_s", "utt_ids",
             "map_role", "map_metric", "map_pick", "map_layer", "map_head", "map_utt", "map_value", "map_key")
SUPPORTED_MAPS_VERSION = 1

# the command that makes each kind of run (printed where a part of the report is missing)
MAKES = {
    "analyze": "satkern analyze --model MODEL --corpus CORPUS --out DIR",
    "maps": "satkern analyze --model MODEL --corpus CORPUS --out DIR --maps 1",
    "prm": "satkern analyze on a corpus with phone alignments (TIMIT .PHN or TextGrids via --alignments)",
    "segment": "satkern segment --model MODEL --corpus CORPUS --out DIR",
    "rank": "satkern rank --model MODEL --corpus CORPUS --out DIR",
}


class RunFolderError(ValueError):
    """A folder that is not a satkern run, or whose files are corrupt or disagree."""


@dataclass
class AnalyzeRun:
    path: Path
    heads: "object"  # pandas DataFrame, HEADS_COLUMNS
    summary: dict
    prm: Optional[Dict[str, np.ndarray]] = None
    maps: Optional[Dict[str, np.ndarray]] = None  # the arrays of maps.npz (loaded)
    utterances: "object" = None  # pandas DataFrame or None


@dataclass
class SegmentRun:
    path: Path
    scores: "object"
    summary: dict
    pr_curve: "object" = None
    example: Optional[Dict[str, np.ndarray]] = None


@dataclass
class RankRun:
    path: Path
    curves: "object"
    summary: dict


@dataclass
class ReportData:
    analyze: Optional[AnalyzeRun] = None
    segment: Optional[SegmentRun] = None
    rank: Optional[RankRun] = None
    folders: List[Path] = field(default_factory=list)

    def runs(self) -> list:
        return [r for r in (self.analyze, self.segment, self.rank) if r is not None]

    def identity(self) -> dict:
        """The model's identity (name, spec, weights checksum) merged over the runs."""
        out: dict = {}
        for r in self.runs():
            for k, v in _model_identity(r.summary).items():
                out.setdefault(k, v)
        return out

    def missing(self) -> List[str]:
        """Parts the page cannot show, as keys of :data:`MAKES`."""
        out = [k for k in ("analyze", "segment", "rank") if getattr(self, k) is None]
        if self.analyze is not None:
            if self.analyze.maps is None:
                out.append("maps")
            if self.analyze.prm is None:
                out.append("prm")
        return out


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{path.parent}: summary.json missing (did the run finish?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path}: corrupt summary.json ({e})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: corrupt summary.json (not a JSON object)")
    return data


def read_summary(path: Path) -> dict:
    """A run's ``summary.json`` in the shared schema (:mod:`satkern.jobs.runner`). Folders written before it
    read the same: their ``backend`` string (segment, rank) becomes ``{"requested": it, "used": []}`` and
    analyze's ``git_commit`` is also its ``commit``."""
    summary = _read_json(path)
    if isinstance(summary.get("backend"), str):
        summary["backend"] = {"requested": summary["backend"], "used": []}
    if "commit" not in summary and "git_commit" in summary:
        summary["commit"] = summary["git_commit"]
    return summary


def _read_csv(path: Path, columns: Sequence[str], numeric: Sequence[str] = ()):
    import pandas as pd

    try:
        df = pd.read_csv(path, keep_default_na=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise RunFolderError(f"{path}: corrupt {path.name} ({e})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RunFolderError(f"{path}: corrupt {path.name}: columns {missing} missing (has {list(df.columns)})")
    for c in numeric:
        try:
            df[c] = pd.to_numeric(df[c], errors="raise")
        except (ValueError, TypeError) as e:
            raise RunFolderError(f"{path}: corrupt {path.name}: column {c!r} is not numeric ({e})") from None
    return df


def _read_npz(path: Path, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError: all mean "corrupt"
        raise RunFolderError(f"{path}: corrupt {path.name} ({type(e).__name__}: {e})") from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise RunFolderError(f"{path}: corrupt {path.name}: arrays {missing} missing")
    return data


def folder_kind(path: Path) -> Optional[str]:
    """``"analyze"``, ``"segment"``, ``"rank"`` or ``None`` (not a run folder)."""
    kind = None
    summary = path / "summary.json"
    if summary.is_file():
        try:
            kind = json.loads(summary.read_text(encoding="utf-8")).get("kind")
        except Exception:
            kind = None  # judged by the marker files; a corrupt summary is reported when loaded
    if kind in ("segment", "rank", "analyze"):
        return kind
    for marker, k in (("curves.csv", "rank"), ("scores.csv", "segment"), ("heads.csv", "analyze")):
        if (path / marker).is_file():
            return k
    return None


def load_analyze(path: Path) -> AnalyzeRun:
    heads = _read_csv(path / "heads.csv", HEADS_COLUMNS, numeric=("layer", "head", "G", "V", "D", "W", "n_utterances"))
    if heads.empty:
        raise RunFolderError(f"{path / 'heads.csv'}: corrupt heads.csv: no rows")
    if heads[["layer", "head"]].isna().any().any() or (heads[["layer", "head"]] < 0).any().any():
        raise RunFolderError(f"{path / 'heads.csv'}: corrupt heads.csv: layer/head must be whole numbers >= 0")
    if heads.duplicated(["layer", "head"]).any():
        raise RunFolderError(f"{path / 'heads.csv'}: corrupt heads.csv: a (layer, head) appears twice")
    heads["layer"] = heads["layer"].astype(int)
    heads["head"] = heads["head"].astype(int)
    heads["category"] = heads["category"].fillna("").astype(str)
    heads = heads.sort_values(["layer", "head"], kind="stable").reset_index(drop=True)
    summary = read_summary(path / "summary.json")
    L, H = int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1
    run = AnalyzeRun(path=path, heads=heads, summary=summary)
    if (path / "prm.npz").is_file():
        prm = _read_npz(path / "prm.npz", PRM_KEYS)
        Y = len(prm["labels"])
        if prm["P"].shape != (L, H, Y, Y) or prm["concentration"].shape != (L, H, Y):
            raise RunFolderError(f"{path / 'prm.npz'}: P {prm['P'].shape} / concentration "
                                 f"{prm['concentration'].shape} do not fit {L} layers x {H} heads x {Y} labels "
                                 f"of heads.csv")
        run.prm = prm
    if (path / "maps.npz").is_file():
        maps = _read_npz(path / "maps.npz", MAPS_KEYS)
        if int(maps["version"]) != SUPPORTED_MAPS_VERSION:
            raise RunFolderError(f"{path / 'maps.npz'}: version {int(maps['version'])}; this satkern reads "
                                 f"version {SUPPORTED_MAPS_VERSION}")
        model = summary.get("model") or {}
        name, checksum = str(maps["model_name"]), str(maps["weights_checksum"])
        if isinstance(model, dict) and (model.get("name") not in (None, name) or
                                        model.get("weights_checksum") not in (None, checksum)):
            raise RunFolderError(f"{path / 'maps.npz'}: maps of model {name!r} (weights {checksum}) but the run in "
                                 f"{path} analyzed {model.get('name')!r} (weights {model.get('weights_checksum')}); "
                                 f"rerun `satkern analyze --maps K` with that run's model")
        for key in maps["map_key"]:
            if str(key) not in maps:
                raise RunFolderError(f"{path / 'maps.npz'}: corrupt maps.npz: array {key} missing")
        bad = [(int(l), int(h)) for l, h in zip(maps["map_layer"], maps["map_head"]) if not (0 <= l < L and 0 <= h < H)]
        if bad:
            raise RunFolderError(f"{path / 'maps.npz'}: maps of heads {bad} that heads.csv ({L} layers x {H} heads) "
                                 f"does not have: the maps come from another model")
        run.maps = maps
    if (path / "utterances.parquet").is_file():
        import pandas as pd

        try:
            run.utterances = pd.read_parquet(path / "utterances.parquet")
        except Exception as e:
            raise RunFolderError(f"{path / 'utterances.parquet'}: corrupt utterances.parquet ({e})") from None
    return run


def load_segment(path: Path) -> SegmentRun:
    scores = _read_csv(path / "scores.csv", SCORES_COLUMNS,
                       numeric=("alpha", "beta", "precision", "recall", "f1", "r_value"))
    summary = read_summary(path / "summary.json")
    run = SegmentRun(path=path, scores=scores, summary=summary)
    if (path / "pr_curve.csv").is_file():
        run.pr_curve = _read_csv(path / "pr_curve.csv", PR_COLUMNS, numeric=("alpha", "beta", "precision", "recall"))
    if (path / "example.npz").is_file():
        ex = _read_npz(path / "example.npz", EXAMPLE_KEYS)
        T = ex["map"].shape[0] if ex["map"].ndim == 2 else -1
        if ex["map"].shape != (T, T) or ex["kf"].shape != (T, T) or ex["score"].shape != (T,):
            raise RunFolderError(f"{path / 'example.npz'}: corrupt example.npz: map {ex['map'].shape}, kf "
                                 f"{ex['kf'].shape}, score {ex['score'].shape} must be [T,T], [T,T], [T]")
        run.example = ex
    return run


def load_rank(path: Path) -> RankRun:
    curves = _read_csv(path / "curves.csv", CURVES_COLUMNS, numeric=("step", "n_pruned", "value"))
    if curves.empty:
        raise RunFolderError(f"{path / 'curves.csv'}: corrupt curves.csv: no rows")
    return RankRun(path=path, curves=curves, summary=read_summary(path / "summary.json"))


def _model_identity(summary: dict) -> dict:
    m = summary.get("model")
    if isinstance(m, str):
        return {"spec": m}
    if isinstance(m, dict):
        return {k: str(m[k]) for k in ("name", "spec", "weights_checksum") if m.get(k)}
    return {}


def _same_model(a: dict, b: dict) -> bool:
    """False only when two identities are comparable and differ (a checksum decides if both have one)."""
    if "weights_checksum" in a and "weights_checksum" in b:
        return a["weights_checksum"] == b["weights_checksum"]
    names_a = {a.get("name"), a.get("spec")} - {None}
    names_b = {b.get("name"), b.get("spec")} - {None}
    return not names_a or not names_b or bool(names_a & names_b)


def expand_folders(paths: Sequence) -> List[Path]:
    """The run folders named by ``paths`` (a folder of run folders stands for them)."""
    if not paths:
        raise ValueError("satkern report: no run folder given; pass the --out folder(s) of satkern analyze, "
                         "segment and/or rank")
    out: List[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"satkern report: run folder {p} does not exist")
        if not p.is_dir():
            raise RunFolderError(f"satkern report: {p} is not a folder (give the --out folder of a satkern run)")
        if folder_kind(p) is not None:
            out.append(p)
            continue
        subs = sorted(s for s in p.iterdir() if s.is_dir() and folder_kind(s) is not None)
        if not subs:
            raise RunFolderError(f"satkern report: {p} is not a satkern run folder (expected heads.csv from "
                                 f"satkern analyze, scores.csv from satkern segment or curves.csv from satkern rank)")
        out.extend(subs)
    return out


def model_label(data: "ReportData") -> str:
    """A run group's model as people name it (``name``, else ``spec``)."""
    ident = data.identity()
    return ident.get("name") or ident.get("spec") or "unknown model"


def load_groups(paths: Sequence) -> List[ReportData]:
    """Read every run folder in ``paths`` and group them by model (one :class:`ReportData` per model, in
    the order the models first appear). Runs of one model: at most one of each kind. A run that
    records no model identity is refused when several models are given (it could belong to any)."""
    loaders = {"analyze": load_analyze, "segment": load_segment, "rank": load_rank}
    runs = []
    for p in expand_folders(paths):
        kind = folder_kind(p)
        runs.append((kind, p, loaders[kind](p)))
    groups: List[ReportData] = []
    for kind, p, run in runs:
        ident = _model_identity(run.summary)
        fits = [g for g in groups if all(_same_model(ident, _model_identity(r.summary)) for r in g.runs())]
        if len(fits) > 1:
            raise RunFolderError(f"satkern report: {p} records no model that tells which of the given models it "
                                 f"belongs to; give one model's runs, or runs whose summary.json names the model")
        group = fits[0] if fits else None
        if group is None:
            group = ReportData()
            groups.append(group)
        prior = getattr(group, kind)
        if prior is not None:
            raise RunFolderError(f"satkern report: two {kind} runs of one model given ({prior.path} and {p}); "
                                 f"give one of each kind per model")
        setattr(group, kind, run)
        group.folders.append(p)
    anon = [r.path for g in groups for r in g.runs() if not _model_identity(r.summary)]
    if len(groups) > 1 and anon:
        raise RunFolderError(f"satkern report: {anon[0]} records no model; runs of several models can only be "
                             f"compared when every summary.json names its model")
    return groups


def load_runs(paths: Sequence) -> ReportData:
    """Read every run folder in ``paths`` (at most one of each kind) and check they describe one model
    (:func:`load_groups` for runs of several models)."""
    groups = load_groups(paths)
    if len(groups) > 1:
        a, b = groups[0], groups[1]
        raise RunFolderError(f"satkern report: {a.folders[0]} and {b.folders[0]} are runs of different models "
                             f"({a.identity()} vs {b.identity()}); load_groups reads runs of several models")
    return groups[0]

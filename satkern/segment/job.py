"""The corpus job of ``satkern segment``: boundaries from attention heads, hidden states and
acoustic baselines, tuned on validation utterances and scored on the rest.

:func:`segment_corpus` does, in order (METRICS.md "Phoneme segmentation"):

1. **Split.** Utterances (sorted by id) with alignments are scored; ``tune_on`` of them, drawn with
   ``seed``, form the *tune* split (validation), the other aligned ones the *test* split.
   Utterances without an alignment are segmented (TextGrids) but not scored.
   **Nothing to tune on** (no utterance has an alignment, or ``tune_on=0``): no grid search; every
   feature set is segmented at the untuned ``alpha = UNTUNED_ALPHA_MULTIPLIER x`` its distance scale
   (over the first ``UNTUNED_SCALE_UTTERANCES`` utterances) and ``beta = UNTUNED_BETA``, or at the one
   value an explicit grid gives; auto heads are the ``keep_heads`` most diagonal. Aligned utterances,
   if any, are all scored; with none, scoring is skipped and said so (``summary.json`` ``scoring``,
   ``notes``), and no ``pr_curve.*`` is written (nothing to draw).
2. **Heads.** ``heads="auto"``: the ``candidates`` most diagonal heads by D (largest first; from a
   ``heads.csv`` of ``satkern analyze`` or computed with the fused ``distance`` statistic over the
   tune split), of which the ``keep_heads`` with the best tuned R-value on the tune split are kept.
   A list of heads is taken as given (each tuned, all kept).
3. **Tuning.** For every feature set (each head separately), alpha x beta grid search for the best
   R-value over the tune split (ties: the smaller alpha, then the smaller beta). The default alpha
   grid is relative: ``ALPHA_MULTIPLIERS`` times the feature set's distance scale (the median over
   tune utterances of the median pairwise frame distance), because distances between attention rows,
   hidden states and log-mel frames differ by orders of magnitude; the alpha values used are
   reported. An explicit alpha grid is used as given for every feature set.
4. **Segmenting.** Every utterance at the tuned (alpha, beta); test-split counts summed; the
   precision-recall curve sweeps ``pr_betas`` at the tuned alpha over the test split.

Outputs (in ``out``): ``scores.csv``, ``pr_curve.csv``, ``textgrids/<utterance_id>.TextGrid``,
``example.npz``, ``summary.json`` (``"version": 1, "kind": "segment"``), ``pr_curve.png`` /
``pr_curve.svg`` (the ``pr_curve.*`` files and ``example.npz`` only when a test utterance was scored);
every file written atomically (temporary file + ``os.replace``). Bad files are
skipped with their reason (``summary.json`` ``skipped``), never fatal.
"""
from __future__ import annotations

import io
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..corpus.batching import BatchDataset
from ..corpus.readers import Utterance
from ..jobs import CorpusJob, CorpusJobConfig, atomic_write_bytes, atomic_write_text
from .boundaries import (SegmentationScores, _check_positive, count_hits, curve_boundaries, filtered_kernel_gram,
                         pairwise_distances, score_curve, score_curves, true_boundaries)
from .features import (HeadMapCapture, UtteranceFeatures, attention_key, check_heads, extract_features, head_name,
                       logmel_extractor, model_hop_seconds, model_upsampling, parse_features, parse_heads)
from .textgrid import textgrid_text

# default alpha grid: multiples of the feature set's distance scale (a factor of 2 apart)
ALPHA_MULTIPLIERS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0)
# default beta grid: 2^(k/2), k = -4..6 (0.25 .. 8)
DEFAULT_BETAS = tuple(2.0 ** (k / 2) for k in range(-4, 7))
DEFAULT_BETAS_TEXT = ",".join(f"{b:.4g}" for b in DEFAULT_BETAS)  # the command line's default --beta-grid
# precision-recall sweep: 2^(k/4), k = -12..16 (0.125 .. 16)
DEFAULT_PR_BETAS = tuple(2.0 ** (k / 4) for k in range(-12, 17))
# With nothing to tune on: alpha = 1/2 x the feature set's distance scale (the middle of ALPHA_MULTIPLIERS; tuned
# values in docs/results/segment-sat-mini-m3 are 1/4 to 1) and beta = 1 (each row's threshold is its mean
# kernel value; tuned values 0.71 to 2), over the first UNTUNED_SCALE_UTTERANCES utterances by id.
UNTUNED_ALPHA_MULTIPLIER = 0.5
UNTUNED_BETA = 1.0
UNTUNED_SCALE_UTTERANCES = 10
NO_ALIGNED = "no aligned utterances to tune or score on"
SCORE_COLUMNS = ["split", "features", "head", "alpha", "beta", "hits", "n_pred", "n_true", "precision", "recall",
                 "f1", "os", "r_value"]
PR_COLUMNS = ["features", "head", "alpha", "beta", "precision", "recall", "f1", "r_value"]
OUTPUT_NAMES = ("scores.csv", "pr_curve.csv", "example.npz", "summary.json", "pr_curve.png", "pr_curve.svg")
RANDOM_WEIGHTS_MEANING = "its heads say nothing about phonemes -- this shows the pipeline, not a finding."


@dataclass
class SegmentConfig(CorpusJobConfig):
    """Everything :func:`segment_corpus` needs (the CLI maps its options one-to-one onto these); the options
    every corpus job shares (model, corpus, out, device, backend, seed, ...) are :class:`CorpusJobConfig`'s
    (``seed`` also draws the tune split)."""

    features: Sequence[str] = ("attention", "mfcc")
    heads: str = "auto"  # "auto" or "L:H,..." (0-based)
    heads_from: Optional[str] = None  # heads.csv of `satkern analyze` (auto: D from there)
    candidates: int = 8  # auto: the most diagonal heads considered
    keep_heads: int = 3  # auto: heads kept (best tune R-value)
    tune_on: int = 10  # validation utterances
    alpha_grid: Optional[Sequence[float]] = None  # None: ALPHA_MULTIPLIERS x each feature set's scale
    beta_grid: Sequence[float] = DEFAULT_BETAS  # the default grid: UNTUNED_BETA when there is nothing to tune on
    pr_betas: Sequence[float] = DEFAULT_PR_BETAS
    tolerance: float = 0.02
    allow_resample: bool = True
    max_utterances: Optional[int] = None
    textgrids: bool = True


def _positive_grid(name: str, values) -> List[float]:
    if values is None:
        raise ValueError(f"argument '{name}' must hold at least one positive number")
    vals = [values] if isinstance(values, (int, float)) else list(values)
    if not vals:
        raise ValueError(f"argument '{name}' is empty; it must hold at least one positive number")
    out = []
    for x in vals:
        out.append(_check_positive(name, x))
    return out


def parse_grid(text: str, name: str) -> List[float]:
    """``"0.5,1,2"`` -> floats (CLI helper); ``ValueError`` naming the option otherwise."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"argument '{name}' is empty; expected comma-separated positive numbers")
    vals = []
    for t in items:
        try:
            vals.append(float(t))
        except ValueError:
            raise ValueError(f"argument '{name}': {t!r} is not a number; expected comma-separated positive "
                             f"numbers") from None
    return _positive_grid(name, vals)


def _check_config(cfg: SegmentConfig):
    specs = parse_features(cfg.features)
    heads = parse_heads(cfg.heads)
    tol = _check_positive("--tolerance", cfg.tolerance)
    alphas = None if cfg.alpha_grid is None else _positive_grid("--alpha-grid", cfg.alpha_grid)
    betas = _positive_grid("--beta-grid", cfg.beta_grid)
    pr_betas = _positive_grid("--pr-betas", cfg.pr_betas)
    for name, v, lo in (("--tune-on", cfg.tune_on, 0), ("--candidates", cfg.candidates, 1),
                        ("--keep-heads", cfg.keep_heads, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"argument '{name}' must be an integer >= {lo}; got {v!r}")
    if cfg.max_utterances is not None and cfg.max_utterances < 1:
        raise ValueError(f"argument '--max-utterances' must be >= 1; got {cfg.max_utterances}")
    return specs, heads, tol, alphas, betas, pr_betas


# ---------------------------------------------------------------------------------------------
# small pieces
# ---------------------------------------------------------------------------------------------
def _segments_seconds(segments, rate: int) -> List[Tuple[float, float, str]]:
    return [(s.start / rate, s.end / rate, s.label) for s in segments]


def _distance_scale(d: torch.Tensor) -> Optional[float]:
    T = d.shape[0]
    if T < 2:
        return None
    iu = torch.triu_indices(T, T, 1, device=d.device)
    return float(d[iu[0], iu[1]].median())


def _grid_counts(frames: torch.Tensor, hop: float, true: np.ndarray, alphas: Sequence[float],
                 betas: Sequence[float], tol: float) -> np.ndarray:
    """``[len(alphas), len(betas), 3]`` (hits, n_pred, n_true) of one utterance and feature set."""
    out = np.zeros((len(alphas), len(betas), 3), dtype=np.int64)
    d = pairwise_distances(frames)
    for ai, a in enumerate(alphas):
        S = score_curves(d, a, betas)  # [len(betas), T]: one pass over K per alpha
        for bi in range(len(betas)):
            pred = curve_boundaries(S[bi], hop).cpu().numpy()
            out[ai, bi] = (count_hits(true, pred, tol), pred.size, true.size)
    return out


def _best_cell(counts: np.ndarray) -> Tuple[int, int, SegmentationScores]:
    best = None
    for ai in range(counts.shape[0]):
        for bi in range(counts.shape[1]):
            s = SegmentationScores.from_counts(*counts[ai, bi])
            if best is None or s.r_value > best[2].r_value:  # strict: ties keep the earlier cell
                best = (ai, bi, s)
    return best


def _label(features: str, head: str) -> str:
    return f"{features} {head}" if head else features


def _key_parts(key: str) -> Tuple[str, str]:
    """``"attention 0:3"`` -> ("attention", "0:3"); ``"mfcc"`` -> ("mfcc", "")."""
    if key.startswith("attention "):
        return "attention", key.split(" ", 1)[1]
    return key, ""


def _diagonality_from_csv(path: str, L: int, H: int) -> np.ndarray:
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"argument '--heads-from': {path} does not exist") from None
    except Exception as e:
        raise ValueError(f"argument '--heads-from': {path} cannot be read as CSV: {e}") from None
    missing = {"layer", "head", "D"} - set(df.columns)
    if missing:
        raise ValueError(f"argument '--heads-from': {path} lacks columns {sorted(missing)} (expected the heads.csv "
                         f"of satkern analyze)")
    D = np.full((L, H), np.nan)
    for layer, head, d in zip(df["layer"], df["head"], df["D"]):
        if not (0 <= int(layer) < L and 0 <= int(head) < H):
            raise ValueError(f"argument '--heads-from': {path} has head {int(layer)}:{int(head)}, out of range for "
                             f"a model of {L} layers x {H} heads (a heads.csv of another model?)")
        D[int(layer), int(head)] = float(d)
    if np.isnan(D).any():
        raise ValueError(f"argument '--heads-from': {path} does not give D for every head of a {L} x {H} model")
    return D


def _most_diagonal(D: np.ndarray, n: int) -> List[Tuple[int, int]]:
    L, H = D.shape
    order = sorted(((l, h) for l in range(L) for h in range(H)), key=lambda lh: (-D[lh], lh))  # largest D first
    return order[:n]


# ---------------------------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------------------------
def segment_corpus(config: SegmentConfig, *, model=None, log: Optional[Callable[[str], None]] = None) -> dict:
    """Run the segmentation job; returns the summary (also written to ``summary.json``).

    ``model``: an already loaded :class:`satkern.models.SpeechModel` (else ``config.model`` is loaded).
    """
    t_start = time.perf_counter()
    specs, explicit_heads, tol, alpha_grid, betas, pr_betas = _check_config(config)
    job = CorpusJob(config, "segment", log)
    log = job.log
    out = job.out
    job.preflight()
    job.refuse_previous_run(["summary.json"], resumable=False)

    # ------------------------------------------------------------------ corpus + model
    corpus = job.discover(max_utterances=config.max_utterances)
    n_found = job.utterances_found
    model = job.load_model(model, meaning=RANDOM_WEIGHTS_MEANING)
    rate = int(model.sample_rate)
    R = model_upsampling(model)
    utts = job.drop_frameless(corpus.utterances)
    if not utts:
        raise job.nothing_usable()
    aligned = [u for u in utts if u.alignment]
    if config.tune_on >= len(aligned) and aligned:
        raise ValueError(f"argument '--tune-on': {config.tune_on} tune utterances leave no test utterance (the corpus "
                         f"has {len(aligned)} with alignments)")
    tune_ids = set(u.uid for u in random.Random(config.seed).sample(aligned, min(config.tune_on, len(aligned))))
    tune_utts = [u for u in aligned if u.uid in tune_ids]
    untuned_why = None  # why alpha and beta are not tuned (nothing to tune on)
    if not tune_utts:
        untuned_why = _untuned_reason(config, corpus.layout, len(utts), len(aligned))
        given_betas = None if _default_betas(betas) else betas
        for name, grid_values in (("--alpha-grid", alpha_grid), ("--beta-grid", given_betas)):
            if grid_values is not None and len(grid_values) != 1:
                raise ValueError(f"{untuned_why}; {name} has {len(grid_values)} values and nothing to tune them on: "
                                 f"give one value, or leave {name} out for the untuned default")
        if not aligned and not config.textgrids:
            raise ValueError(f"{untuned_why}, and --no-textgrids leaves nothing to write")
        betas = [UNTUNED_BETA] if _default_betas(betas) else betas

    L, H = model.num_layers, model.num_heads
    n_hidden = L + 1
    for s in specs:
        if s.kind == "hidden" and s.layer > L:
            raise ValueError(f"argument '--features': hidden:{s.layer} out of range: the model has {L} layers "
                             f"(hidden states 0..{L})")
    if explicit_heads is not None:
        check_heads(explicit_heads, L, H)
    job.prepare_folder(OUTPUT_NAMES)  # every argument checked: no output of an earlier run survives a new one
    ds = BatchDataset([], rate, with_alignments=True, tier=config.phone_tier, allow_resample=config.allow_resample)

    def load(u: Utterance):
        if job.is_skipped(u.uid):  # a file met twice (D pass, tune pass) is reported once
            return None
        ds.with_alignments = bool(u.alignment)
        item = ds.load(u)
        if item.waveform is None:
            job.skip(u.uid, item.path, item.error)
            return None
        return item

    def features_of(u: Utterance, capture):
        """(features, true boundaries, segments in seconds) of one utterance, or None (skipped with its reason);
        the boundaries and segments are None for an utterance without an alignment."""
        item = load(u)
        if item is None:
            return None
        try:
            f = extract_features(model, item.waveform, specs, capture, logmel_ex, u.uid)
        except ValueError as e:
            job.skip(u.uid, u.audio, str(e))
            return None
        segs = _segments_seconds(item.segments, rate) if item.segments is not None else None
        return f, (true_boundaries(segs) if segs is not None else None), segs

    wants_attention = any(s.kind == "attention" for s in specs)
    timing = {}

    # ------------------------------------------------------------------ candidate heads
    D = None
    heads_how = None
    candidates: List[Tuple[int, int]] = []
    if wants_attention:
        if explicit_heads is not None:
            candidates, heads_how = list(explicit_heads), "given"
        else:
            if config.heads_from:
                D = _diagonality_from_csv(config.heads_from, L, H)
                heads_how = f"auto: {config.candidates} most diagonal by D from {config.heads_from}"
            else:
                D = _diagonality_over(job, tune_utts or utts[:UNTUNED_SCALE_UTTERANCES], load)
                heads_how = (f"auto: {config.candidates} most diagonal by D over "
                             f"{'the tune split' if tune_utts else f'the first {UNTUNED_SCALE_UTTERANCES} utterances'}")
            candidates = _most_diagonal(D, min(config.candidates, L * H))
    cand_keys = [attention_key(h) for h in candidates]
    other_keys = [s.name for s in specs if s.kind != "attention"]
    logmel_ex = logmel_extractor(rate)
    log(f"satkern segment: {model.name} ({model.family}, {L} layers x {H} heads, R = {R}) on {len(utts)} utterances "
        f"of {corpus.layout} corpus {config.corpus}: {len(tune_utts)} tune, "
        f"{len(aligned) - len(tune_utts)} test, {len(utts) - len(aligned)} without alignments; features "
        f"{', '.join(s.name for s in specs)}" + (f"; candidate heads {', '.join(map(head_name, candidates))}"
                                                  if candidates else ""))

    # ------------------------------------------------------------------ tune split: features, grid search
    t0 = time.perf_counter()
    # features computed ahead of the segmentation pass: the tune split's, or with nothing to tune on those of the
    # utterances the untuned alpha's distance scale comes from
    pre_utts = tune_utts or (utts[:UNTUNED_SCALE_UTTERANCES] if alpha_grid is None else [])
    pre_ids = set(u.uid for u in pre_utts)
    stored: Dict[str, Tuple[UtteranceFeatures, np.ndarray, list]] = {}
    capture = HeadMapCapture(model, candidates, backend=config.backend) if candidates else None
    try:
        for u in job.progress("tune: features" if tune_utts else "alpha scale: features", items=pre_utts):
            got = features_of(u, capture)
            if got is not None:
                stored[u.uid] = got
    finally:
        if capture is not None:
            capture.remove()
            job.record_backends(capture.patch)
    n_tune = sum(1 for uid in stored if uid in tune_ids)
    keys = cand_keys + other_keys
    alphas_of: Dict[str, List[float]] = {}
    scale_of: Dict[str, Optional[float]] = {}
    for key in keys:
        if alpha_grid is not None:
            alphas_of[key], scale_of[key] = list(alpha_grid), None
            continue
        scales = [s for s in (_distance_scale(pairwise_distances(f.frames(key))) for f, _, _ in stored.values())
                  if s is not None and s > 0]
        if not scales:
            job.undo_folder()
            if tune_utts:
                raise ValueError(f"satkern segment: cannot derive an alpha grid for {key} (no tune utterance with 2+ "
                                 f"distinct frames); give --alpha-grid")
            raise ValueError(f"{untuned_why}, and the untuned alpha of {key} cannot be derived (none of the first "
                             f"{UNTUNED_SCALE_UTTERANCES} utterances has 2+ distinct frames); give one --alpha-grid "
                             f"value")
        scale_of[key] = float(np.median(scales))
        multipliers = ALPHA_MULTIPLIERS if tune_utts else (UNTUNED_ALPHA_MULTIPLIER,)
        alphas_of[key] = [m * scale_of[key] for m in multipliers]
    grid: Dict[str, np.ndarray] = {k: np.zeros((len(alphas_of[k]), len(betas), 3), dtype=np.int64) for k in keys}
    for uid in job.progress("tune: grid search", items=[uid for uid in stored if uid in tune_ids]):
        f, true, _ = stored[uid]
        for key in keys:
            grid[key] += _grid_counts(f.frames(key), f.hop[key], true, alphas_of[key], betas, tol)
    tuned: Dict[str, dict] = {}
    for key in keys:
        if n_tune:
            ai, bi, s = _best_cell(grid[key])
        else:
            ai, bi, s = 0, 0, None
        tuned[key] = {"alpha": alphas_of[key][ai], "beta": betas[bi], "tune": s}
    if candidates:
        if explicit_heads is None and n_tune:
            rank = sorted(candidates, key=lambda h: (-tuned[attention_key(h)]["tune"].r_value, candidates.index(h)))
            kept_heads = rank[: config.keep_heads]
        elif explicit_heads is None:
            kept_heads = candidates[: config.keep_heads]  # nothing to tune on: the most diagonal
        else:
            kept_heads = list(candidates)
    else:
        kept_heads = []
    best_head = kept_heads[0] if kept_heads else None
    kept_keys = [attention_key(h) for h in kept_heads] + other_keys
    for f, _, _ in stored.values():
        f.drop(k for k in cand_keys if k not in kept_keys)
    timing["tune_s"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ every utterance
    t1 = time.perf_counter()
    counts = {k: np.zeros(3, dtype=np.int64) for k in kept_keys}
    pr = {k: np.zeros((len(pr_betas), 3), dtype=np.int64) for k in kept_keys}
    n_segmented = n_test = n_unaligned = 0
    example = None
    example_target = next((u.uid for u in aligned if u.uid not in tune_ids), None)
    capture = HeadMapCapture(model, kept_heads, backend=config.backend) if kept_heads else None
    try:
        for u in job.progress("segment", items=utts):
            if u.uid in pre_ids:
                if u.uid not in stored:
                    continue  # skipped in the first pass (reason recorded)
                f, true, segs = stored.pop(u.uid)
            else:
                got = features_of(u, capture)
                if got is None:
                    continue
                f, true, segs = got
            tiers = []
            scored_test = u.uid not in tune_ids and true is not None
            for key in kept_keys:
                frames = f.frames(key)
                alpha, beta = tuned[key]["alpha"], tuned[key]["beta"]
                d = pairwise_distances(frames)
                S = score_curves(d, alpha, [beta])[0]
                pred = curve_boundaries(S, f.hop[key]).cpu().numpy()
                tiers.append((key, pred))
                if scored_test:
                    counts[key] += (count_hits(true, pred, tol), pred.size, true.size)
                    S_pr = score_curves(d, alpha, pr_betas)
                    for bi in range(len(pr_betas)):
                        p = curve_boundaries(S_pr[bi], f.hop[key]).cpu().numpy()
                        pr[key][bi] += (count_hits(true, p, tol), p.size, true.size)
                if u.uid == example_target and best_head is not None and key == attention_key(best_head):
                    K = torch.exp(-d / alpha)
                    Kf = filtered_kernel_gram(K, beta)
                    example = {"utt_id": np.array(u.uid), "head": np.array(head_name(best_head)),
                               "hop": np.array(f.hop[key]), "map": frames.to(torch.float32).cpu().numpy(),
                               "kf": Kf.cpu().numpy().astype(np.uint8),
                               "score": score_curve(Kf).to(torch.float64).cpu().numpy(),
                               "true_s": np.asarray(true, dtype=np.float64), "pred_s": pred.astype(np.float64),
                               "logmel": f.logmel.to(torch.float32).numpy(),
                               "alpha": np.array(alpha), "beta": np.array(beta)}
            if true is not None:
                tiers.append(("true", true))
            n_segmented += 1
            n_test += int(scored_test)
            n_unaligned += int(true is None)
            if config.textgrids:
                tg = textgrid_text(tiers, xmax=f.num_samples / rate)
                atomic_write_text(out / "textgrids" / f"{u.uid}.TextGrid", tg)
    finally:
        if capture is not None:
            capture.remove()
            job.record_backends(capture.patch)
    timing["segment_s"] = time.perf_counter() - t1

    # ------------------------------------------------------------------ outputs
    import pandas as pd

    rows = []
    for key in keys:
        feats, head = _key_parts(key)
        s = tuned[key]["tune"]
        if s is not None:
            rows.append({"split": "tune", "features": feats, "head": head, "alpha": tuned[key]["alpha"],
                         "beta": tuned[key]["beta"], **s.as_dict()})
    for key in kept_keys:
        feats, head = _key_parts(key)
        if n_test:
            s = SegmentationScores.from_counts(*counts[key])
            rows.append({"split": "test", "features": feats, "head": head, "alpha": tuned[key]["alpha"],
                         "beta": tuned[key]["beta"], **s.as_dict()})
    scores = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    _write_csv(out / "scores.csv", scores)
    pr_rows = []
    for key in kept_keys:
        feats, head = _key_parts(key)
        if not n_test:
            break
        for bi, b in enumerate(pr_betas):
            s = SegmentationScores.from_counts(*pr[key][bi])
            pr_rows.append({"features": feats, "head": head, "alpha": tuned[key]["alpha"], "beta": b,
                            "precision": s.precision, "recall": s.recall, "f1": s.f1, "r_value": s.r_value})
    pr_df = pd.DataFrame(pr_rows, columns=PR_COLUMNS)
    if example is not None:
        buf = io.BytesIO()
        np.savez(buf, **example)
        atomic_write_bytes(out / "example.npz", buf.getvalue())
    test_scores = {(_label(*_key_parts(k))): SegmentationScores.from_counts(*counts[k]) for k in kept_keys}
    if len(pr_df):  # no test utterance scored: no curve, so no pr_curve.csv and no empty figure
        from .plot import pr_curve_figure

        _write_csv(out / "pr_curve.csv", pr_df)
        how = "tuned" if n_tune else "untuned"
        fig = pr_curve_figure(pr_df, {lab: (s.recall, s.precision) for lab, s in test_scores.items()},
                              title=f"{model.name}: test split, beta swept at the {how} alpha (circle: {how})")
        for ext in ("png", "svg"):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=150)
            atomic_write_bytes(out / f"pr_curve.{ext}", buf.getvalue())

    elapsed = time.perf_counter() - t_start
    seg_time = timing["tune_s"] + timing["segment_s"]

    def feature_set(key):
        return "attention" if key.startswith("attention ") else key

    best_r: Dict[str, dict] = {}
    for key in kept_keys:
        fs = feature_set(key)
        tune_r = tuned[key]["tune"].r_value if tuned[key]["tune"] is not None else None
        test_r = test_scores[key].r_value if n_test else None
        entry = {"head": _key_parts(key)[1], "tune": tune_r, "test": test_r}
        if fs not in best_r or (fs == "attention" and key == attention_key(best_head)):
            best_r[fs] = entry
    skipped = job.skipped
    scoring = _scoring_record(untuned_why, alpha_grid, betas, n_tune, n_test, n_segmented, config.textgrids)
    summary = job.summary(
        model={"upsampling": R, "hidden_states": n_hidden},
        tolerance=tol,
        features=[s.name for s in specs],
        hop_s={_label(*_key_parts(k)): (logmel_ex.hop_length / rate if k in ("logmel", "mfcc")
                                        else model_hop_seconds(model)) for k in kept_keys},
        heads={"how": heads_how, "candidates": [head_name(h) for h in candidates],
               "kept": [head_name(h) for h in kept_heads],
               "best": head_name(best_head) if best_head is not None else None,
               "D": ({head_name(h): float(D[h]) for h in candidates} if D is not None else None),
               "tune_r_value": {head_name(h): (tuned[attention_key(h)]["tune"].r_value
                                               if tuned[attention_key(h)]["tune"] is not None else None)
                                for h in candidates}},
        grids={"alpha": {k: alphas_of[k] for k in keys}, "alpha_scale": scale_of,
               "alpha_multipliers": (None if alpha_grid is not None else
                                     list(ALPHA_MULTIPLIERS) if tune_utts else [UNTUNED_ALPHA_MULTIPLIER]),
               "beta": list(betas), "pr_beta": list(pr_betas)},
        tuned={(_label(*_key_parts(k))): {"alpha": tuned[k]["alpha"], "beta": tuned[k]["beta"]} for k in kept_keys},
        best_r_value=best_r,
        scoring=scoring,
        notes=[scoring["note"]] if scoring["note"] else [],
        counts={"utterances_found": n_found, "segmented": n_segmented, "scored_tune": n_tune,
                "scored_test": n_test, "unaligned_segmented": n_unaligned, "skipped": len(skipped)},
        utterances_per_second=(n_segmented / seg_time) if seg_time > 0 else None,
        timing={**timing, "elapsed_s": elapsed,
                "note": "utterances_per_second = segmented utterances / (tune_s + segment_s): feature extraction "
                        "(model forward), the grid search and the final segmentation; model loading excluded"},
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        outputs=sorted([p.name for p in out.iterdir() if p.is_file()] + ["summary.json"]
                       + (["textgrids/"] if config.textgrids and n_segmented else [])),
    )
    summary["outputs"] = sorted(set(summary["outputs"]))
    job.write_summary(summary)
    return summary


def _default_betas(betas: Sequence[float]) -> bool:
    """``betas`` is the default beta grid: :data:`DEFAULT_BETAS`, or the same rounded to the 4 significant digits
    the command line's default text holds."""
    return list(betas) in (list(DEFAULT_BETAS), [float(t) for t in DEFAULT_BETAS_TEXT.split(",")])


def _untuned_reason(config: SegmentConfig, layout: str, n_utterances: int, n_aligned: int) -> str:
    """Why there is nothing to tune alpha and beta on, in words that say what is missing."""
    if n_aligned:
        return "--tune-on 0: no tune utterances, so alpha and beta are not tuned"
    if config.alignments:
        folder = Path(config.alignments)
        if folder.is_dir():
            n = sum(1 for f in folder.rglob("*") if f.suffix.lower() == ".textgrid")
            where = (f"--alignments {folder} holds {n} TextGrid{'s' if n != 1 else ''}, none named like an audio "
                     f"file of the corpus")
        else:
            where = f"--alignments {folder} is not a folder"
    elif layout == "timit":
        where = "no .PHN file beside any audio file"
    elif layout == "manifest":
        where = "the manifest names no alignment file"
    else:
        where = "no TextGrid beside any audio file, and no --alignments folder given"
    return f"{NO_ALIGNED}: none of the {n_utterances} utterances has an alignment ({where})"


def _scoring_record(untuned_why: Optional[str], alpha_grid, betas, n_tune: int, n_test: int, n_segmented: int,
                    textgrids: bool) -> dict:
    """``summary.json`` ``scoring``: whether alpha and beta were tuned and the boundaries scored, why not, and the
    note the report shows."""
    note = None
    if untuned_why is not None:
        alpha = (f"alpha = {UNTUNED_ALPHA_MULTIPLIER:g} x the median frame distance" if alpha_grid is None
                 else f"alpha = {alpha_grid[0]:g}")
        note = f"{untuned_why}; {n_segmented} utterances segmented with untuned {alpha}, beta = {betas[0]:g}"
        note += f"; scored on all {n_test} aligned utterances" if n_test else "; scoring skipped"
        if textgrids:
            note += "; TextGrids in textgrids/"
    return {"tuned": bool(n_tune), "scored": bool(n_test), "untuned_because": untuned_why, "note": note}


def _write_csv(path: Path, df) -> None:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.17g")
    atomic_write_text(path, buf.getvalue())


def _diagonality_over(job: CorpusJob, utts: Sequence[Utterance], load) -> np.ndarray:
    """Corpus-mean D per head ``[L, H]`` (METRICS.md eq. 3, utterances weighted equally) with the fused
    ``distance`` statistic (no map materialized)."""
    import satkern

    model = job.model
    h = satkern.patch(model, stats=("distance",), backend=job.config.backend)
    try:
        for u in job.progress("heads: D", items=list(utts)):
            item = load(u)
            if item is None:
                continue
            inputs, _ = model.prepare([item.waveform])
            with torch.inference_mode():
                model.forward(inputs)
        Dall = h.metrics.D  # [U, L, H]
    finally:
        h.remove()
        job.record_backends(h)
    if Dall is None or Dall.shape[0] == 0:
        raise ValueError("satkern segment: no utterance could be loaded to rank heads by D")
    return np.nanmean(Dall.to(torch.float64).numpy(), axis=0)


__all__ = ["SegmentConfig", "segment_corpus", "parse_grid", "ALPHA_MULTIPLIERS", "DEFAULT_BETAS", "DEFAULT_PR_BETAS",
           "SCORE_COLUMNS", "PR_COLUMNS"]

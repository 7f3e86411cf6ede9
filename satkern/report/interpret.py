"""What the report needs to interpret a head's numbers: uniform-attention baselines, length-free values,
per-utterance intervals and the near-uniform mark (data only; :mod:`.html` shows it).

Uniform attention at length T gives G = log T, V = -log T, D = -(T^2 - 1)/(3 T^2), W = 1/T
(:func:`satkern.metrics.uniform_head_metrics`); a corpus value being a mean over utterances, the
baseline beside it is the same mean of the uniform values over the utterances the head was measured
on. The length-free values (:func:`satkern.metrics.length_free`) place each utterance's value
between uniform attention and the most peaked map; a head's length-free value is their mean over
utterances, its interval the 5th to 95th percentile over utterances.

The lengths T come from, best first: the ``frames`` column of ``utterances.parquet`` (exact, the
model frames the metrics were computed over); its ``duration`` column times the model's frame rate
(``sample_rate / frame_stride``; the model's own framing can differ by a frame or two); the mean
length ``counts.frames / counts.utterances_analyzed`` of ``summary.json`` (no per-utterance data:
baselines at the mean length, no intervals; log of the mean length is at least the mean of the logs,
so G's baseline is then a little high).

A head is marked **near uniform** when its rows stay within :data:`NEAR_UNIFORM_KL` nats of the
uniform row on 95% of the utterances: the 95th percentile over utterances of log T - G, the mean
KL divergence of its rows from uniform (:func:`satkern.metrics.kl_from_uniform`), is below it
(without per-utterance data: the corpus mean of log T - G at the mean length).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ..metrics import LENGTH_FREE_UNIFORM, kl_from_uniform, length_free, uniform_head_metrics

METRICS = ("G", "V", "D", "W")
# a head's rows are "near uniform" when their mean KL divergence from the uniform row is below this
# (nats) on 95% of utterances; by Pinsker's inequality the rows then differ from uniform by a total
# variation of at most sqrt(0.05 / 2) = 0.16 on average, and random-weight heads sit far below it
NEAR_UNIFORM_KL = 0.05
INTERVAL = (5.0, 95.0)  # percentiles over utterances shown as a head's interval

LENGTH_SOURCES = {
    "frames": "exact: the model frames of every utterance (utterances.parquet)",
    "duration": "estimated: each utterance's duration times the model's frame rate (utterances.parquet has no "
                "frames column; the model's own framing can differ by a frame or two)",
    "mean": "approximate: uniform attention at the mean length counts.frames / utterances (run analyze with "
            "--per-utterance for exact baselines and intervals)",
}

FORMULAS = (
    "Uniform attention (every weight 1/T) gives G = log T, V = \u2212log T, D = \u2212(T\u00b2 \u2212 1)/(3T\u00b2) "
    "(about \u22121/3) and W = 1/T; the baseline row shows their mean over the analyzed utterances, as the corpus "
    "values are means. Length-free values place a head between uniform attention and the most peaked map, larger "
    "meaning more so as for the metrics: G\u0302 = G / log T (1 = uniform rows, 0 = every row on one key), "
    "V\u0302 = 1 + V / log T (0 = uniform column mass, 1 = one key takes all attention), "
    "D\u0302 = 1 + D / (\u2212D_unif) = 1 \u2212 3T\u00b2|D|/(T\u00b2 \u2212 1) (0 = as far from the diagonal as "
    "uniform, 1 = on the diagonal), \u0174 = (W \u2212 1/T)/(1 \u2212 1/T) (0 = uniform, 1 = a row with all its "
    "weight on one key); each is computed per utterance and averaged. KL = log T \u2212 G is the mean KL divergence "
    "(nats) of the head's rows from the uniform row.")


@dataclass
class Interpretation:
    """Per-head interpretation, rows in the order of ``heads.csv`` (layer-major)."""

    table: "object"  # pandas DataFrame: layer, head, category, G..W, {m}_unif, {m}_free, {m}_lo, {m}_hi, KL, KL_hi, near_uniform
    source: Optional[str]  # key of LENGTH_SOURCES, None when no length is known
    n_utterances: int  # utterances behind the baselines (0 when unknown)
    lengths: Optional[np.ndarray]  # the utterances' lengths T (None without per-utterance data)
    per_utterance: "object" = None  # pandas DataFrame with T, {m}_free and KL per utterance and head (or None)

    @property
    def has_intervals(self) -> bool:
        return self.per_utterance is not None

    def baseline(self) -> dict:
        """The uniform baseline of each metric, one value when every head shares it (the usual case)."""
        out = {}
        for m in METRICS:
            col = self.table[f"{m}_unif"].to_numpy(dtype=float)
            col = col[np.isfinite(col)]
            out[m] = float(col[0]) if col.size and np.allclose(col, col[0], rtol=0, atol=1e-12) else float("nan")
        return out

    def near_uniform_heads(self) -> List[tuple]:
        t = self.table
        return [(int(l), int(h)) for l, h in t.loc[t["near_uniform"], ["layer", "head"]].itertuples(index=False)]


def _lengths(run):
    """``(per-utterance frame) DataFrame or None, source, mean length or None)``."""
    u = run.utterances
    model = run.summary.get("model") if isinstance(run.summary.get("model"), dict) else {}
    if u is not None and len(u):
        if "frames" in u.columns and u["frames"].notna().all():
            return u.assign(T=u["frames"].astype(float)), "frames", None
        sr, stride = model.get("sample_rate"), model.get("frame_stride")
        if "duration" in u.columns and sr and stride:
            T = np.round(u["duration"].to_numpy(dtype=float) * float(sr) / float(stride))
            return u.assign(T=T), "duration", None
    counts = run.summary.get("counts") or {}
    frames, n = counts.get("frames"), counts.get("utterances_analyzed")
    if isinstance(frames, (int, float)) and isinstance(n, (int, float)) and n > 0 and frames > 0:
        return None, "mean", float(frames) / float(n)
    return None, None, None


def interpret(run) -> Interpretation:
    """The :class:`Interpretation` of an analyze run (:class:`satkern.report.load.AnalyzeRun`)."""
    import pandas as pd

    heads = run.heads
    per, source, mean_T = _lengths(run)
    table = heads[[c for c in ("layer", "head", "category", *METRICS, "n_utterances") if c in heads.columns]].copy()
    if per is not None:
        per = per.copy()
        for m in METRICS:
            per[f"{m}_free"] = length_free(m, per[m].to_numpy(dtype=float), per["T"].to_numpy())
        per["KL"] = kl_from_uniform(per["G"].to_numpy(dtype=float), per["T"].to_numpy())
        rows = []
        for (l, h), g in per.groupby(["layer", "head"], sort=True):
            rec = {"layer": int(l), "head": int(h)}
            for m in METRICS:
                ok = g[m].notna().to_numpy()
                rec[f"{m}_unif"] = float(np.mean(uniform_head_metrics(g["T"].to_numpy()[ok])[m])) if ok.any() else np.nan
                x = g[f"{m}_free"].to_numpy(dtype=float)
                x = x[np.isfinite(x)]
                rec[f"{m}_free"] = float(x.mean()) if x.size else np.nan
                rec[f"{m}_lo"], rec[f"{m}_hi"] = ((float(np.percentile(x, INTERVAL[0])), float(np.percentile(x, INTERVAL[1])))
                                                  if x.size else (np.nan, np.nan))
            kl = g["KL"].to_numpy(dtype=float)
            kl = kl[np.isfinite(kl)]
            rec["KL"] = float(kl.mean()) if kl.size else np.nan
            rec["KL_hi"] = float(np.percentile(kl, INTERVAL[1])) if kl.size else np.nan
            rows.append(rec)
        extra = pd.DataFrame(rows)
        table = table.merge(extra, on=["layer", "head"], how="left")
        lengths = per.drop_duplicates("utterance")["T"].to_numpy(dtype=float)
        n_utt = int(len(lengths))
    elif mean_T is not None:
        u = uniform_head_metrics(mean_T)
        for m in METRICS:
            table[f"{m}_unif"] = float(u[m])
            table[f"{m}_free"] = length_free(m, table[m].to_numpy(dtype=float), mean_T)
            table[f"{m}_lo"] = table[f"{m}_hi"] = np.nan
        table["KL"] = kl_from_uniform(table["G"].to_numpy(dtype=float), mean_T)
        table["KL_hi"] = table["KL"]
        lengths, n_utt = None, int((run.summary.get("counts") or {}).get("utterances_analyzed") or 0)
    else:
        for m in METRICS:
            for suffix in ("_unif", "_free", "_lo", "_hi"):
                table[f"{m}{suffix}"] = np.nan
        table["KL"] = table["KL_hi"] = np.nan
        lengths, n_utt = None, 0
    table["near_uniform"] = (table["KL_hi"] < NEAR_UNIFORM_KL).fillna(False).astype(bool)
    return Interpretation(table=table, source=source, n_utterances=n_utt, lengths=lengths, per_utterance=per)


def free_value(metric: str, value: float, T: int) -> float:
    """One utterance's length-free value (for a map of ``T`` frames)."""
    return float(length_free(metric, value, T))


__all__ = ["Interpretation", "interpret", "free_value", "NEAR_UNIFORM_KL", "INTERVAL", "LENGTH_SOURCES", "FORMULAS",
           "LENGTH_FREE_UNIFORM", "METRICS"]

"""The written summary at the top of the report: what the runs found, in numbers, set against the paper.

Each function takes the loaded runs (:mod:`.load`) and returns a :class:`Paragraph`: plain text
sentences plus the facts they state (for tests and for the side-by-side page). Nothing here is
drawn; :mod:`.html` escapes and places the text.

The paper's findings checked (Yang, Liu & Lee 2020; METRICS.md "Findings"):

* segmentation (sec. 5): the best attention head segments phones better than MFCCs (TIMIT R-value
  79.99 against 76.68);
* pruning (sec. 7): diagonal heads matter most, then vertical, then global (D > V > G), and pruning
  global heads barely hurts. Here "matters" is the mean harm of an order over its pruning steps:
  the task's loss against the unpruned model (value - unpruned for a lower-is-better task such as
  reconstruction L1, unpruned - value for an accuracy), averaged over the steps every order shares,
  leaving out the last step where all orders have pruned every head.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

# the paper's TIMIT R-values (x 100 in the paper; METRICS.md)
PAPER_ATTENTION_R = 0.7999
PAPER_MFCC_R = 0.7668
# tasks where a smaller value is better; every other task (accuracies) is better when larger
LOWER_IS_BETTER = {"reconstruction"}
TASK_METRIC = {"reconstruction": "reconstruction L1", "phone": "phone accuracy (frame level)",
               "speaker-frame": "speaker accuracy (frame level)",
               "speaker-utterance": "speaker accuracy (utterance level)"}


def task_label(task: str) -> str:
    """The metric a task measures and which way is better, e.g. ``"phone accuracy (frame level), higher is better"``."""
    better = "lower is better" if task in LOWER_IS_BETTER else "higher is better"
    return f"{TASK_METRIC.get(task, task)}, {better}"


@dataclass
class Paragraph:
    title: str
    sentences: List[str]
    facts: Dict[str, object] = field(default_factory=dict)
    agrees: Optional[bool] = None  # with the paper (None: not comparable)

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def _heads_str(heads) -> str:
    return ", ".join(f"{l}:{h}" for l, h in heads)


def heads_paragraph(run, interp) -> Paragraph:
    """Counts per category, the near-uniform heads and how far the categories' heads are from uniform."""
    from .interpret import NEAR_UNIFORM_KL

    df = interp.table
    n = len(df)
    counts = {c: int((df["category"] == c).sum()) for c in ("global", "vertical", "diagonal")}
    model = run.summary.get("model") if isinstance(run.summary.get("model"), dict) else {}
    L, H = model.get("layers"), model.get("heads")
    shape = f" ({L} layers x {H} heads)" if L and H else ""
    s = [f"{n} heads{shape}: {counts['global']} global, {counts['vertical']} vertical, {counts['diagonal']} diagonal "
         f"(a category ranks a head among this model's heads; it does not say the head is far from uniform)."]
    near = interp.near_uniform_heads()
    facts = {"counts": counts, "near_uniform": near, "heads": n}
    if interp.source is None:
        s.append("No utterance lengths are recorded, so no baseline or near-uniform mark can be given.")
        return Paragraph("Heads", s, facts)
    rule = (f"95% of utterances" if interp.has_intervals else "the corpus mean")
    if near:
        by_cat = {c: sum(1 for l, h in near if df.loc[(df.layer == l) & (df["head"] == h), "category"].item() == c)
                  for c in counts}
        s.append(f"{len(near)} of them are near uniform (rows within {NEAR_UNIFORM_KL:g} nats KL of the uniform row on "
                 f"{rule}): {_heads_str(near)} ({by_cat['global']} global, {by_cat['vertical']} vertical, "
                 f"{by_cat['diagonal']} diagonal).")
        facts["near_uniform_by_category"] = by_cat
    else:
        s.append(f"No head is near uniform (rows within {NEAR_UNIFORM_KL:g} nats KL of the uniform row on {rule}).")
    base = interp.baseline()
    for cat, m, what in (("global", "G", "G / log T"), ("vertical", "V", "1 + V / log T"),
                         ("diagonal", "D", "1 + D / |D_unif|")):
        part = df[df["category"] == cat]
        if part.empty or part[f"{m}_free"].isna().all():
            continue
        i = part[f"{m}_free"].idxmax()
        l, h, v = int(part.loc[i, "layer"]), int(part.loc[i, "head"]), float(part.loc[i, f"{m}_free"])
        facts[f"most_{cat}"] = (l, h, v)
        s.append(f"Most {cat} head {l}:{h}: {m} = {part.loc[i, m]:.4f} against {base[m]:.4f} for uniform attention, "
                 f"length-free {what} = {v:.3f} (uniform: {1.0 if m == 'G' else 0.0:g}).")
    return Paragraph("Heads", s, facts)


def _pick_split(scores):
    splits = list(dict.fromkeys(scores["split"].astype(str))) if "split" in scores.columns else []
    return "test" if "test" in splits else (splits[-1] if splits else None)


def _chosen_heads(run, split) -> Dict[str, str]:
    """The head of each feature set chosen without looking at ``split``: the run's ``best_r_value`` record,
    else the best on the tune split (choosing on the test split itself would flatter the result)."""
    out = {}
    best = run.summary.get("best_r_value")
    if isinstance(best, dict):
        for feat, rec in best.items():
            if isinstance(rec, dict) and rec.get("head") is not None:
                out[str(feat)] = str(rec["head"])
    sc = run.scores
    if "split" in sc.columns and split != "tune":
        tune = sc[sc["split"].astype(str) == "tune"]
        for feat, part in tune.groupby(tune["features"].astype(str), sort=False):
            if feat not in out and not part.empty:
                out[feat] = str(part.loc[part["r_value"].astype(float).idxmax(), "head"]).replace("nan", "")
    return out


def segment_paragraph(run) -> Paragraph:
    """The best attention head against the MFCC / log-mel / hidden-state baselines, on the test split."""
    sc = run.scores.copy()
    split = _pick_split(sc)
    if split is not None:
        sc = sc[sc["split"].astype(str) == split]
    sc["head"] = sc["head"].fillna("").astype(str)
    chosen = _chosen_heads(run, split)
    best = {}
    for feat, part in sc.groupby(sc["features"].astype(str), sort=False):
        mine = part[part["head"] == chosen[feat]] if feat in chosen else part.iloc[0:0]
        i = (mine if not mine.empty else part)["r_value"].astype(float).idxmax()
        best[feat] = (str(part.loc[i, "head"]), float(part.loc[i, "r_value"]))
    where = f"the {split} split" if split else "the scored utterances"
    tol = run.summary.get("tolerance")
    tol_s = f"{float(tol) * 1000:g} ms" if isinstance(tol, (int, float)) else "20 ms"
    s, facts, agrees = [], {"split": split, "best": best, "chosen": chosen}, None
    if "attention" in best:
        head, r = best["attention"]
        how = "chosen on the tune split" if "attention" in chosen else f"the best on the {split} split itself"
        s.append(f"On {where} ({tol_s} strict hits) the best attention head {head} ({how}) "
                 f"reaches R-value {r:.4f} (the paper, TIMIT: {PAPER_ATTENTION_R:.4f}).")
    others = [f for f in best if f != "attention"]
    if others:
        s.append("Other features: " + ", ".join(f"{f} {best[f][1]:.4f}" for f in others) + ".")
    base = next((f for f in ("mfcc", "logmel") if f in best), None)
    if "attention" in best and base is not None:
        diff = best["attention"][1] - best[base][1]
        agrees = diff > 0
        s.append(f"Attention {'beats' if agrees else 'does not beat'} {base.upper() if base == 'mfcc' else 'log-mel'} "
                 f"(by {diff:+.4f}): {'as' if agrees else 'unlike'} the paper, where attention beats MFCC by "
                 f"{PAPER_ATTENTION_R - PAPER_MFCC_R:+.4f}.")
    elif "attention" in best:
        s.append("This run has no MFCC or log-mel baseline (segment --features attention,mfcc adds one), so the "
                 "paper's comparison (attention 0.7999 > MFCC 0.7668) is not checked.")
    else:
        s.append("This run scored no attention head, so the paper's comparison is not checked.")
    return Paragraph("Segmentation", s, facts, agrees)


def order_harm(curves, task: str) -> Dict[str, float]:
    """Mean harm of each head-pruning order on ``task`` (module docstring); random orders averaged over seeds."""
    c = curves[curves["task"].astype(str) == task]
    c = c[c["order"].astype(str) != "span"]
    if c.empty:
        return {}
    means = c.groupby([c["order"].astype(str), "n_pruned"])["value"].mean()
    base_rows = c[c["n_pruned"] == 0]["value"]
    if base_rows.empty:
        return {}
    base = float(base_rows.mean())
    orders = sorted(set(means.index.get_level_values(0)))
    steps = None
    for o in orders:
        st = set(means[o].index)
        steps = st if steps is None else steps & st
    steps = sorted(s for s in (steps or ()) if s > 0)
    if len(steps) > 1:
        steps = steps[:-1]  # the last step: every order has pruned (nearly) every head
    if not steps:
        return {}
    sign = 1.0 if task in LOWER_IS_BETTER else -1.0
    return {o: float(np.mean([sign * (means[o][n] - base) for n in steps])) for o in orders}


def rank_paragraph(run) -> Paragraph:
    """For every task: the unpruned value, each order's mean harm, whether D > V > G as in the paper."""
    curves = run.curves
    tasks = [t for t in TASK_METRIC if t in set(curves["task"].astype(str))]
    tasks += sorted(set(curves["task"].astype(str)) - set(tasks))
    s, facts, verdicts = [], {}, []
    for task in tasks:
        harm = order_harm(curves, task)
        c = curves[(curves["task"].astype(str) == task) & (curves["n_pruned"] == 0) & (curves["order"].astype(str) != "span")]
        if not harm or c.empty:
            continue
        base = float(c["value"].mean())
        shown = [o for o in ("D", "V", "G", "W", "random", "gradient") if o in harm]
        facts[task] = {"unpruned": base, "harm": harm}
        sentence = (f"{task_label(task)}: unpruned {base:.4f}; mean harm over the shared pruning steps "
                    + ", ".join(f"{o} {harm[o]:+.4f}" for o in shown))
        if all(o in harm for o in "DVG"):
            ok = harm["D"] > harm["V"] > harm["G"]
            verdicts.append(ok)
            order = " > ".join(sorted("DVG", key=lambda o: -harm[o]))
            sentence += f" (harm order {order}: {'as' if ok else 'not as'} the paper's D > V > G)"
            g_best = c["value"].mean()
            gpart = curves[(curves["task"].astype(str) == task) & (curves["order"].astype(str) == "G")
                           & (curves["n_pruned"] > 0)]
            if not gpart.empty and task not in LOWER_IS_BETTER and float(gpart["value"].max()) > g_best:
                sentence += f"; pruning global heads improves it to {float(gpart['value'].max()):.4f} at best"
        s.append(sentence + ".")
    if not s:
        return Paragraph("Pruning", ["The rank run has no head-pruning curve to compare orders on."], facts, None)
    agrees = bool(verdicts) and all(verdicts)
    if verdicts:
        s.append(f"The paper's order (diagonal heads matter most, then vertical, then global) holds on "
                 f"{sum(verdicts)} of {len(verdicts)} tasks. Harm is the loss against the unpruned model "
                 f"(positive = worse), averaged over the pruning steps all orders share, the last one left out.")
    return Paragraph("Pruning", s, facts, agrees if verdicts else None)


__all__ = ["Paragraph", "heads_paragraph", "segment_paragraph", "rank_paragraph", "order_harm", "task_label",
           "LOWER_IS_BETTER", "TASK_METRIC"]

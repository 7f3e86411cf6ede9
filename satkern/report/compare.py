"""The side-by-side page: runs of several models (``satkern report RUN_A RUN_B ...``) on common axes.

One :class:`~satkern.report.load.ReportData` per model (:func:`satkern.report.load.load_groups`);
the page shows, per model, the summary paragraphs of :mod:`.summary`, and across models the
length-free head maps, the categories per layer, the segmentation scores and precision-recall
envelopes, and the pruning curves, every figure with the same axes for every model. A model whose
runs lack a part is named where that part would be. The figures of one model alone (attention maps,
phoneme relation maps, ...) are in its own report: ``satkern report`` on that model's folders.
"""
from __future__ import annotations

from typing import List

from . import figures
from .html import _e, _frame_table, _img, _model_line, _paragraph_html, page, random_banner, summary_paragraphs
from .interpret import NEAR_UNIFORM_KL, interpret
from .load import MAKES, ReportData
from .summary import segment_paragraph

COMPARE_SECTIONS = (("summary", "Summary"), ("head-maps", "Head maps"), ("categories", "Categories"),
                    ("segmentation", "Segmentation"), ("pruning", "Pruning"))


def labels(groups: List[ReportData]) -> List[str]:
    """One label per model: its name, with the weights checksum added where two models share a name."""
    names = [g.identity().get("name") or g.identity().get("spec") or f"model {i + 1}" for i, g in enumerate(groups)]
    out = []
    for i, (n, g) in enumerate(zip(names, groups)):
        checksum = g.identity().get("weights_checksum")
        out.append(f"{n} ({checksum[:8]})" if names.count(n) > 1 and checksum else
                   (f"{n} #{i + 1}" if names.count(n) > 1 else n))
    return out


def _missing_for(label: str, kind: str) -> str:
    return f'<p class="missing">{_e(label)}: no {kind} run given (<code>{_e(MAKES[kind])}</code>).</p>'


def _summary(groups, names) -> str:
    import pandas as pd

    rows = []
    for name, g in zip(names, groups):
        s = g.runs()[0].summary
        m = s.get("model") if isinstance(s.get("model"), dict) else {}
        rec = {"model": name, "description": _model_line(s), "random weights": "yes" if m.get("random_weights") else "no",
               "weights": str(m.get("weights_checksum") or ""), "runs": ", ".join(str(p) for p in g.folders)}
        if g.analyze is not None:
            t = interpret(g.analyze).table
            for c in ("global", "vertical", "diagonal"):
                rec[c] = int((t["category"] == c).sum())
            rec["near uniform"] = int(t["near_uniform"].sum())
        rows.append(rec)
    df = pd.DataFrame(rows)
    out = [_frame_table(df, list(df.columns), cls="models", sortable=False)]
    out.append(f'<p class="src">Near uniform: a head whose rows stay within {NEAR_UNIFORM_KL:g} nats KL of the '
               "uniform row on 95% of utterances (the head table of each model's own report gives every value). "
               "Categories rank heads within one model; compare the length-free values across models.</p>")
    for name, g in zip(names, groups):
        out.append(f'<h3 data-model="{_e(name)}">{_e(name)}</h3><div class="summary">')
        out += [_paragraph_html(p) for p in summary_paragraphs(g)]
        out.append("</div>")
    return "".join(out)


def _head_maps(groups, names) -> str:
    have = [(n, interpret(g.analyze).table) for n, g in zip(names, groups) if g.analyze is not None]
    out = [_missing_for(n, "analyze") for n, g in zip(names, groups) if g.analyze is None]
    have_len = [(n, t) for n, t in have if t["G_free"].notna().any()]
    if have_len:
        out.append('<div class="figs">' + _img(figures.compare_head_scatter(have_len), "length-free head maps of every model",
                                               "Length-free values (mean over utterances); dashed: uniform attention; "
                                               "ringed: near uniform.") + "</div>")
    for n, t in have:
        if not t["G_free"].notna().any():
            out.append(f'<p class="missing">{_e(n)}: no utterance lengths recorded, so no length-free values.</p>')
    return "".join(out)


def _categories(groups, names) -> str:
    have = [(n, interpret(g.analyze).table) for n, g in zip(names, groups) if g.analyze is not None]
    out = [_missing_for(n, "analyze") for n, g in zip(names, groups) if g.analyze is None]
    if have:
        out.append('<div class="figs">' + _img(figures.compare_categories(have), "head categories per layer of every model")
                   + "</div>")
    return "".join(out)


def _segmentation(groups, names) -> str:
    import pandas as pd

    out = [_missing_for(n, "segment") for n, g in zip(names, groups) if g.segment is None]
    rows = []
    for n, g in zip(names, groups):
        if g.segment is None:
            continue
        p = segment_paragraph(g.segment)
        for feat, (head, r) in p.facts["best"].items():
            rows.append({"model": n, "split": str(p.facts["split"] or ""), "features": feat, "head": head, "r_value": r})
    if rows:
        df = pd.DataFrame(rows)
        out.append("<h3>Best R-value per feature set</h3>" + _frame_table(df, list(df.columns), cls="compare-scores"))
    prs = [(n, g.segment.pr_curve) for n, g in zip(names, groups)
           if g.segment is not None and g.segment.pr_curve is not None and not g.segment.pr_curve.empty]
    if prs:
        out.append('<div class="figs">' + _img(figures.compare_pr(prs), "precision-recall envelopes of every model",
                                               "Upper-right envelope over beta of each model's precision-recall points "
                                               "(each model's own report shows every point).") + "</div>")
    return "".join(out)


def _pruning(groups, names) -> str:
    out = [_missing_for(n, "rank") for n, g in zip(names, groups) if g.rank is None]
    have = [(n, g.rank.curves) for n, g in zip(names, groups) if g.rank is not None]
    if have:
        out.append('<div class="figs">' + _img(figures.compare_pruning(have), "pruning curves of every model",
                                               "Each row is one task, its y axis the task's metric and which way is "
                                               "better, shared by every model.") + "</div>")
    return "".join(out)


def render_compare(groups: List[ReportData], *, progress: bool = False) -> str:
    """The side-by-side page of several models' runs, as a string."""
    names = labels(groups)
    title = "satkern report: " + " vs ".join(names)
    makers = {"summary": _summary, "head-maps": _head_maps, "categories": _categories, "segmentation": _segmentation,
              "pruning": _pruning}
    sections = [(sid, label, (lambda f=makers[sid]: f(groups, names))) for sid, label in COMPARE_SECTIONS]
    return page(title, sections, subtitle=f" {len(groups)} models side by side.", banner=random_banner(groups),
                progress=progress)


__all__ = ["render_compare", "labels", "COMPARE_SECTIONS"]

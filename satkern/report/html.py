"""The report page: one self-contained HTML file (inline PNG figures, inline CSS and script).

The page makes no request of any kind: every figure is a ``data:`` URL, the sort script and the
style sheet are inline, and a Content-Security-Policy (``default-src 'none'``) tells the browser
to refuse anything else. Every number shown is read from the run files (:mod:`.load`).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from typing import List, Optional

import numpy as np

from . import explorer, figures
from .interpret import LENGTH_FREE_UNIFORM, free_value
from .interpret import FORMULAS, INTERVAL, LENGTH_SOURCES, NEAR_UNIFORM_KL, interpret
from .load import MAKES, ReportData
from .summary import heads_paragraph, rank_paragraph, segment_paragraph

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;font-size:13px;color:#cfd8dc}
nav{padding:8px 28px;background:#eceff1;font-size:14px;position:sticky;top:0;z-index:2}
nav a{margin-right:16px;color:#37474f;text-decoration:none} nav a:hover{text-decoration:underline}
main{padding:0 28px 40px;max-width:1400px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;margin:18px 0;padding:8px 20px 16px}
h2{font-size:18px;border-bottom:1px solid #eee;padding-bottom:6px} h3{font-size:15px;margin:14px 0 6px}
.banner{background:#b71c1c;color:#fff;padding:10px 28px;font-weight:600}
.missing{background:#fff8e1;border-left:4px solid #ffb300;padding:6px 10px;font-size:14px}
code{background:#f1f1f1;padding:1px 4px;border-radius:3px;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #e0e0e0;padding:3px 8px;text-align:right} th{background:#f5f5f5}
td.t,th.t{text-align:left}
table.sortable th{cursor:pointer;user-select:none} table.sortable th[data-dir=asc]::after{content:" \\25B2"}
table.sortable th[data-dir=desc]::after{content:" \\25BC"}
.scroll{max-height:420px;overflow:auto;display:inline-block;border:1px solid #eee}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0} figcaption{font-size:12px;color:#555;max-width:560px}
img{max-width:100%;height:auto}
.cat-global{color:#1f77b4}.cat-vertical{color:#d62728}.cat-diagonal{color:#2ca02c}
.src{font-size:12px;color:#777}
.summary p{max-width:1000px;line-height:1.45;margin:6px 0}
.agree{color:#1b5e20;font-weight:600} .disagree{color:#b71c1c;font-weight:600} .unchecked{color:#555}
tr.uniform th{background:#eef3f6;font-weight:normal;font-style:italic}
td.near{background:#fff3e0} table.heads td{white-space:nowrap}
.iv{color:#777;font-size:11px}
p.formulas{font-size:12px;color:#444;max-width:1100px}
"""

# click a header to sort by it (numeric when both cells parse as numbers), click again to reverse
SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener('click', function () {
      var asc = th.getAttribute('data-dir') !== 'asc';
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', asc ? 'asc' : 'desc');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-sort'), y = b.cells[col].getAttribute('data-sort');
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

SECTIONS = (("summary", "Summary"), ("overview", "Overview"), ("head-map", "Head map"), ("attention-maps", "Attention maps"),
            ("head-explorer", "Head explorer"),
            ("segmentation", "Segmentation"), ("phoneme-relations", "Phoneme relations"), ("pruning", "Pruning"))


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return ""
    if isinstance(x, (float, np.floating)):
        if math.isnan(x):
            return "NaN"
        return f"{x:.{digits}f}" if abs(x) < 1e5 else f"{x:.4g}"
    return str(x)


def _img(fig, alt: str, caption: str = "") -> str:
    data = base64.b64encode(figures.to_png(fig)).decode("ascii")
    fig.clear()
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def _missing(part: str, what: str) -> str:
    return f'<p class="missing">{_e(what)} not in the given runs: make it with <code>{_e(MAKES[part])}</code>.</p>'


def _kv_table(rows) -> str:
    body = "".join(f'<tr><th class="t">{_e(k)}</th><td class="t">{_e(v)}</td></tr>' for k, v in rows if v not in (None, ""))
    return f"<table>{body}</table>"


def _frame_table(df, columns: List[str], cls: str = "", sortable: bool = True, digits: int = 4) -> str:
    from pandas.api.types import is_numeric_dtype

    head = "".join(f"<th>{_e(c)}</th>" if is_numeric_dtype(df[c]) else f'<th class="t">{_e(c)}</th>' for c in columns)
    rows = []
    for rec in df[columns].itertuples(index=False):
        cells = []
        for c, v in zip(columns, rec):
            if isinstance(v, (float, np.floating, int, np.integer)) and not isinstance(v, bool):
                sort = "NaN" if (isinstance(v, float) and math.isnan(v)) else repr(float(v))
                cells.append(f'<td data-sort="{sort}">{_e(_fmt(v, digits))}</td>')
            else:
                extra = f' class="t cat-{_e(v)}"' if c == "category" else ' class="t"'
                cells.append(f'<td{extra} data-sort="{_e(v)}">{_e(v)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    classes = " ".join(x for x in (cls, "sortable" if sortable else "") if x)
    return f'<div class="scroll"><table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _model_line(summary: dict) -> str:
    m = summary.get("model")
    if isinstance(m, dict):
        parts = [str(m.get("name") or m.get("spec") or "?")]
        if m.get("family"):
            parts.append(f"({m['family']})")
        if m.get("layers") and m.get("heads"):
            parts.append(f"{m['layers']} layers x {m['heads']} heads")
        return " ".join(parts)
    return str(m) if m else ""


def _backend_line(backend: dict) -> str:
    """The satkern backends that ran (summary ``backend.used``), or the one asked for where a run did not record them."""
    used = ", ".join(backend.get("used") or [])
    return used or (f"{backend['requested']} (asked for)" if backend.get("requested") else "")


def _overview(data: ReportData) -> str:
    out = []
    a = data.analyze
    summary = a.summary if a else (data.segment or data.rank).summary
    versions = summary.get("versions") or {}
    corpus = summary.get("corpus") if isinstance(summary.get("corpus"), dict) else {"path": summary.get("corpus")}
    counts = summary.get("counts") or {}
    hours = summary.get("audio_hours")
    rows = [("model", _model_line(summary)),
            ("corpus", " ".join(str(x) for x in (corpus.get("path"), f"({corpus['layout']})" if corpus.get("layout") else "")
                                if x)),
            ("utterances analyzed", counts.get("utterances_analyzed")),
            ("utterances skipped", counts.get("utterances_skipped")),
            ("audio", f"{hours:.4f} h ({hours * 3600:.1f} s)" if isinstance(hours, (int, float)) else None),
            ("device", summary.get("device")),
            ("attention backend", _backend_line(summary.get("backend") or {})),
            ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
            ("git commit", summary.get("commit")),
            ("run folders", ", ".join(str(p) for p in data.folders))]
    out.append(_kv_table(rows))
    if a is None:
        out.append(_missing("analyze", "The per-head analysis (head table, head map, attention maps, PRMs)"))
        return "".join(out)
    out.append(_heads_table(a))
    return "".join(out)


def _interval(m: str, r) -> str:
    lo, hi = getattr(r, f"{m}_lo"), getattr(r, f"{m}_hi")
    if isinstance(lo, float) and not (math.isnan(lo) or math.isnan(hi)):
        return f' <span class="iv">[{lo:.2f}, {hi:.2f}]</span>'
    return ""


def _num_cell(v, digits: int = 4, extra: str = "", cls: str = "") -> str:
    v = float(v) if v is not None else float("nan")
    sort = "NaN" if math.isnan(v) else repr(v)
    c = f' class="{cls}"' if cls else ""
    return f'<td{c} data-sort="{sort}">{_e(_fmt(v, digits))}{extra}</td>'


def _heads_table(a) -> str:
    """The head table: corpus means (heads.csv), the category, the near-uniform mark, the length-free
    values with their per-utterance intervals and the KL from uniform; a first row gives uniform
    attention's values for the same utterances."""
    interp = interpret(a)
    df = interp.table
    cats = ", ".join(f"{c} {int((df['category'] == c).sum())}" for c in ("global", "vertical", "diagonal"))
    near = int(df["near_uniform"].sum())
    out = [f"<h3>Heads ({len(df)}; {cats}; {near} near uniform); click a column to sort</h3>"]
    free_names = {"G": "G/log T", "V": "1+V/log T", "D": "1+D/|D_unif|", "W": "W rel."}
    iv = f" [{INTERVAL[0]:g}-{INTERVAL[1]:g}%]" if interp.has_intervals else ""
    cols = (["layer", "head", "G", "V", "D", "W", "category", "near uniform"]
            + [f"{free_names[m]}{iv}" for m in "GVDW"] + ["KL (nats)", "n_utterances"])
    head = "".join(f'<th class="t">{_e(c)}</th>' if c in ("category", "near uniform") else f"<th>{_e(c)}</th>"
                   for c in cols)
    base = interp.baseline()
    if interp.source is not None:
        approx = "≈ " if interp.source != "frames" else ""
        cells = ['<th class="t" colspan="2">uniform attention</th>']
        cells += [f"<th>{approx}{_e(_fmt(base[m]))}</th>" for m in "GVDW"]
        cells += ['<th class="t">(same utterances)</th><th class="t"></th>']
        cells += ["<th>1</th>", "<th>0</th>", "<th>0</th>", "<th>0</th>", "<th>0</th>", "<th></th>"]
        head_rows = f"<tr>{head}</tr><tr class=\"uniform\">{''.join(cells)}</tr>"
    else:
        head_rows = f"<tr>{head}</tr>"
    rows = []
    for r in df.itertuples(index=False):
        cells = [_num_cell(r.layer, 0), _num_cell(r.head, 0)] + [_num_cell(getattr(r, m)) for m in "GVDW"]
        cat = str(r.category)
        cells.append(f'<td class="t cat-{_e(cat)}" data-sort="{_e(cat)}">{_e(cat)}</td>')
        nu = "yes" if r.near_uniform else ""
        cells.append(f'<td class="t{" near" if nu else ""}" data-sort="{nu or "no"}">{nu}</td>')
        cells += [_num_cell(getattr(r, f"{m}_free"), 3, _interval(m, r)) for m in "GVDW"]
        cells.append(_num_cell(r.KL, 4))
        cells.append(_num_cell(getattr(r, "n_utterances", float("nan")), 0))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    out.append(f'<div class="scroll"><table class="heads sortable"><thead>{head_rows}</thead><tbody>{"".join(rows)}'
               f"</tbody></table></div>")
    source = LENGTH_SOURCES.get(interp.source, "no utterance lengths recorded: no baselines")
    out.append(f'<p class="formulas">G globalness (mean row entropy), V verticality (−entropy of the column mass), '
               f"D diagonality (−mean distance from the diagonal / T), W max weight; corpus means over utterances, "
               f'from <code>{_e(a.path / "heads.csv")}</code>. {_e(FORMULAS)} W rel. is (W − 1/T)/(1 − 1/T). '
               f"Near uniform: the 95th percentile over utterances of KL is below {NEAR_UNIFORM_KL:g} nats"
               f"{'' if interp.has_intervals else ' (here: the corpus KL, no per-utterance data)'}. "
               f"Lengths: {_e(source)}."
               + (f" Intervals: {INTERVAL[0]:g}th to {INTERVAL[1]:g}th percentile over utterances "
                  f"(<code>{_e(a.path / 'utterances.parquet')}</code>)." if interp.has_intervals else
                  " No per-utterance intervals: run analyze with <code>--per-utterance</code>.") + "</p>")
    chunked = ((a.summary.get("model") or {}).get("s3prl") or {}).get("utterances_chunked") if isinstance(
        a.summary.get("model"), dict) else None
    if chunked:
        out.append(f'<p class="missing">{int(chunked)} utterances ran in s3prl chunks: their maps are block-diagonal, '
                   "and the baselines above are for one uniform block over the whole utterance.</p>")
    return "".join(out)


def _head_map(data: ReportData) -> str:
    a = data.analyze
    if a is None:
        return _missing("analyze", "Head metrics")
    df = a.heads
    interp = interpret(a)
    t = interp.table
    base = interp.baseline()
    figs = []
    if interp.source is not None:
        figs.append(_img(figures.head_scatter(t["G_free"], t["V_free"], t["D_free"], t["category"],
                                              uniform=(1.0, 0.0, 0.0), near_uniform=t["near_uniform"], length_free=True,
                                              title="Heads by length-free globalness, verticality and diagonality "
                                                    "(each dot one head; dashed: uniform attention)"),
                         "length-free G/V/D scatter of every head",
                         "Length-free values (mean over utterances): uniform attention sits where the dashed lines "
                         "cross; ringed heads are near uniform."))
    figs.append(_img(figures.head_scatter(df["G"], df["V"], df["D"], df["category"],
                                          uniform=None if interp.source is None else (base["G"], base["V"], base["D"]),
                                          near_uniform=t["near_uniform"]),
                     "G/V/D scatter of every head",
                     "Corpus means as in heads.csv; dashed: uniform attention on the same utterances."))
    figs.append(_img(figures.category_counts(df["layer"], df["category"]), "head categories per layer"))
    figs.append(_img(figures.rank_g_vs_w(df["G"], df["W"], df["category"]), "rank by G against rank by W (Fig. 6a)",
                     "Fig. 6a: each head's place in the pruning order by G against the max-weight baseline's order."))
    out = [f'<div class="figs">{"".join(figs)}</div>']
    if interp.has_intervals:
        out.append("<h3>Distributions over utterances</h3>")
        out.append('<div class="figs">' + _img(figures.head_intervals(t, interval=INTERVAL),
                                               "per-utterance spread of the length-free values of every head",
                                               f"Each head's mean over utterances (dot) and the {INTERVAL[0]:g}th to "
                                               f"{INTERVAL[1]:g}th percentile over utterances (bar) of its length-free "
                                               "values; dashed: uniform attention.") + "</div>")
    else:
        out.append('<p class="missing">No per-utterance distributions: run analyze with <code>--per-utterance</code> '
                   "(or <code>--maps K</code>, which implies it).</p>")
    return "".join(out)


def _attention_maps(data: ReportData) -> str:
    a = data.analyze
    if a is None:
        return _missing("analyze", "Attention maps")
    z = a.maps
    if z is None:
        return _missing("maps", "Attention maps (maps.npz)")
    out = ['<p>The most global, vertical and diagonal heads by their corpus value, each on the utterance '
           'whose length-free value is closest to the head\'s mean ("average") and on the one where the length-free '
           'value is largest ("extreme"): G / log T, 1 + V / log T, 1 + D / |D_unif|, which compare utterances of '
           'different lengths (by raw G or V the extreme would just be the longest or shortest file). Log-mel '
           'spectrogram on both axes, phone boundaries as white lines, labels left out where they would overlap '
           '(Fig. 1).</p>']
    fr, hop = float(z["frame_rate_hz"]), float(z["logmel_hop_s"])
    uids = [str(u) for u in z["utt_ids"]]
    for role in ("global", "vertical", "diagonal"):
        idx = [i for i, r in enumerate(z["map_role"]) if str(r) == role]
        if not idx:
            continue
        out.append(f'<h3 class="cat-{role}">{role.capitalize()} heads</h3><div class="figs">')
        for i in idx:
            j, l, h = int(z["map_utt"][i]), int(z["map_layer"][i]), int(z["map_head"][i])
            metric, pick, value = str(z["map_metric"][i]), str(z["map_pick"][i]), float(z["map_value"][i])
            cv = float(z["map_corpus_value"][i]) if "map_corpus_value" in z else float("nan")
            A = z[str(z["map_key"][i])]
            free = free_value(metric, value, A.shape[0])
            title = (f"layer {l} head {h}, {pick} utterance {uids[j]} (T = {A.shape[0]})\n{metric} = {value:.4f} here, "
                     f"{cv:.4f} corpus mean; length-free {free:.3f}, uniform {LENGTH_FREE_UNIFORM[metric]:g}")
            fig = figures.attention_map(A, z[f"logmel_{j}"], frame_rate_hz=fr, logmel_hop_s=hop,
                                        phone_starts=z.get(f"phone_start_{j}", ()), phone_ends=z.get(f"phone_end_{j}", ()),
                                        phone_labels=z.get(f"phone_label_{j}", ()), title=title)
            out.append(_img(fig, f"{role} head L{l}:H{h} on {uids[j]}"))
        out.append("</div>")
    out.append(f'<p class="src">from <code>{_e(a.path / "maps.npz")}</code> (model {_e(str(z["model_name"]))}).</p>')
    return "".join(out)


def _segmentation(data: ReportData) -> str:
    s = data.segment
    if s is None:
        return _missing("segment", "Phoneme segmentation (Fig. 2)")
    out = []
    if s.example is not None:
        ex = s.example
        title = f"head {ex['head']} on utterance {ex['utt_id']}: true boundaries dashed, predicted red (Fig. 2)"
        out.append('<div class="figs">' + _img(figures.segmentation(ex["map"], ex["kf"], ex["score"], hop=float(ex["hop"]),
                                                                     true_s=ex["true_s"], pred_s=ex["pred_s"], title=title),
                                                "segmentation example (Fig. 2)") + "</div>")
    else:
        out.append('<p class="missing">The segmentation run has no example.npz: no Fig. 2 picture.</p>')
    if s.pr_curve is not None and not s.pr_curve.empty:
        out.append('<div class="figs">' + _img(figures.pr_curves(s.pr_curve, tuned=_tuned_points(s)),
                                               "precision-recall curves (Fig. 2e)", PR_CAPTION) + "</div>")
    else:
        out.append('<p class="missing">The segmentation run has no pr_curve.csv: no Fig. 2e.</p>')
    cols = [c for c in ("split", "features", "head", "alpha", "beta", "hits", "n_pred", "n_true", "precision", "recall",
                        "f1", "os", "r_value") if c in s.scores.columns]
    sc = s.scores.copy()
    sc["head"] = sc["head"].fillna("").astype(str)
    for c in ("split", "features"):
        if c in sc.columns:
            sc[c] = sc[c].fillna("").astype(str)
    out.append("<h3>Scores (strict hits, 20 ms unless the run says otherwise)</h3>")
    out.append(_frame_table(sc.sort_values("r_value", ascending=False).head(200), cols, cls="scores"))
    out.append(_notes(s.summary))
    out.append(f'<p class="src">from <code>{_e(s.path)}</code>.</p>')
    return "".join(out)


def _phoneme_relations(data: ReportData) -> str:
    a = data.analyze
    if a is None:
        return _missing("analyze", "Phoneme relation maps (Fig. 3, 4)")
    if a.prm is None:
        return _missing("prm", "Phoneme relation maps (prm.npz)")
    df, prm = a.heads, a.prm
    labels = [str(x) for x in prm["labels"]]
    out, figs, shown = [], [], set()
    for metric, role in (("V", "most vertical"), ("G", "most global")):
        vals = df[metric].to_numpy(dtype=float)
        if np.isnan(vals).all():
            continue
        i = int(np.nanargmax(vals))
        l, h = int(df["layer"][i]), int(df["head"][i])
        if (l, h) in shown:
            continue
        shown.add((l, h))
        title = f"{role} head: layer {l} head {h} ({metric} = {vals[i]:.4f}) (Fig. 3)"
        figs.append(_img(figures.phoneme_relation_map(prm["P"][l, h], labels, title), f"PRM of layer {l} head {h}"))
    C = prm["concentration"].reshape(-1, prm["concentration"].shape[-1])  # layer-major, as heads.csv
    figs.append(_img(figures.verticality_vs_concentration(df["V"], C[(df["layer"] * prm["P"].shape[1] + df["head"]).to_numpy()],
                                                          df["category"]), "V against extreme concentration (Fig. 4)"))
    out.append('<p>P[m, n] = (P\' - P_U) / P_U: how much more (red) or less (blue) query frames of phone m attend to '
               'key frames of phone n than uniform attention would. Grey cells are undefined: no utterance holds both '
               'phones, so uniform attention (P_U) gives the pair no weight to compare with; phones that never occur '
               'are left out of the maps.</p>')
    out.append(f'<div class="figs">{"".join(figs)}</div>')
    out.append(f'<p class="src">from <code>{_e(a.path / "prm.npz")}</code> ({len(labels)} phone labels).</p>')
    return "".join(out)


def _notes(summary: dict) -> str:
    notes = summary.get("notes") or []
    if isinstance(notes, str):
        notes = [notes]
    if not notes:
        return ""
    return "<h3>Notes from the run</h3><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"


# the rank run's rule (summary.json timing.wide_spread; satkern.rank.timing.WIDE_SPREAD), for runs that do not say
WIDE_SPREAD_DEFAULT = 0.2


def _forward_time_table(c, summary: dict) -> str:
    """The forward time per audio second of every point (one row per point: the tasks share its timing),
    with k, the minimum and the spread, and a note saying at how many points the spread is too wide to
    read a speed-up from, with the rule (the one ``satkern rank`` records in ``summary.json`` ``timing``).
    Runs written before the spread was recorded (one sample per point) are shown with that said."""
    timing = summary.get("timing") if isinstance(summary.get("timing"), dict) else {}
    try:
        limit = float(timing.get("wide_spread", WIDE_SPREAD_DEFAULT))
    except (TypeError, ValueError):
        limit = WIDE_SPREAD_DEFAULT

    def is_wide(x) -> bool:  # NaN (one sample) counts as wide
        return not (x == x) or x > limit

    if "forward_s_per_audio_s" not in c.columns:
        return ""
    keys = [k for k in ("order", "seed", "n_pruned", "span", "span_mode") if k in c.columns]
    cols = [k for k in ("forward_s_per_audio_s", "forward_s_per_audio_s_min", "forward_spread", "timing_rounds")
            if k in c.columns]
    speed = c.groupby(keys, dropna=False, sort=False)[cols].first().reset_index()
    for k in ("order", "span_mode"):
        if k in speed.columns:
            speed[k] = speed[k].fillna("").astype(str)
    names = {"forward_s_per_audio_s": "forward s per audio s (median)", "forward_s_per_audio_s_min": "min",
             "forward_spread": "spread", "timing_rounds": "k"}
    out = ["<h3>Forward time per audio second at each point</h3>"]
    if "forward_spread" not in speed.columns:
        out.append('<p class="missing">This run timed each point once (written before satkern rank recorded '
                   "repeats): no spread is known, so no speed-up can be read from these times.</p>")
    else:
        speed["forward_spread"] = speed["forward_spread"].astype(float)
        wide = speed[[is_wide(float(x)) for x in speed["forward_spread"]]]
        rule = (f"Rule: a point's spread is (max &minus; min) / median of its k interleaved timings; above "
                f"{100 * limit:.0f}&nbsp;% (or k&nbsp;=&nbsp;1) it is too wide to read a speed-up from, and a "
                "speed-up between two points is read only when the ratio of their medians differs from 1 by more "
                "than both spreads.")
        if len(wide):
            worst = float(np.nanmax(speed["forward_spread"])) if speed["forward_spread"].notna().any() else float("nan")
            out.append(f'<p class="missing"><b>The spread is too wide to read a speed-up</b> at {len(wide)} of '
                       f"{len(speed)} points (widest {_fmt(worst, 3)}): the machine's load moved the times more "
                       f"than the pruning did. {rule}</p>")
        else:
            out.append(f'<p class="src">Every point\'s spread is at most {100 * limit:.0f}&nbsp;%. {rule}</p>')
    speed = speed.rename(columns=names)
    out.append(_frame_table(speed, list(speed.columns), cls="speed"))
    return "".join(out)


def _pruning(data: ReportData) -> str:
    r = data.rank
    if r is None:
        return _missing("rank", "Pruning curves (Fig. 5)")
    out = ['<div class="figs">' + _img(figures.pruning_curves(r.curves), "pruning curves (Fig. 5)",
                                       "Each panel's y axis names the task's metric and which way is better.") + "</div>"]
    c = r.curves
    out.append(_forward_time_table(c, r.summary))
    out.append(_notes(r.summary))
    out.append(f'<p class="src">from <code>{_e(r.path / "curves.csv")}</code> ({len(c)} rows, tasks '
               f'{_e(", ".join(sorted(c["task"].astype(str).unique())))}).</p>')
    return "".join(out)


PR_CAPTION = ("Each point is one beta at the tuned alpha. Raising beta drops kernel-gram entries and the score "
              "curve's minimal plateaus split or merge, so the boundary sets of neighbouring betas are not nested: "
              "precision and recall both move non-monotonically and the thin line (the points in beta order) zigzags. "
              "The thick line is the upper-right envelope of the same points (the best precision some beta reaches at "
              "that recall or more), a summary, not a fit; rings mark the tuned beta. Points with no hit at all are "
              "left out.")


def _tuned_points(s) -> dict:
    """``{label: (recall, precision)}`` of each feature set's tuned beta on the PR curve (its row in pr_curve.csv)."""
    out = {}
    tuned = s.summary.get("tuned") if isinstance(s.summary.get("tuned"), dict) else {}
    pr = s.pr_curve
    for label, t in tuned.items():
        if not isinstance(t, dict) or "beta" not in t:
            continue
        feat, _, head = str(label).partition(" ")
        part = pr[(pr["features"].astype(str) == feat) & (pr["head"].astype(object).fillna("").astype(str) == head)]
        if part.empty:
            continue
        i = (part["beta"] - float(t["beta"])).abs().idxmin()
        if abs(float(part.loc[i, "beta"]) - float(t["beta"])) < 1e-9:
            out[label] = (float(part.loc[i, "recall"]), float(part.loc[i, "precision"]))
    return out


def _paragraph_html(p) -> str:
    verdict = ""
    if p.agrees is True:
        verdict = ' <span class="agree">Agrees with the paper.</span>'
    elif p.agrees is False:
        verdict = ' <span class="disagree">Does not agree with the paper.</span>'
    return f'<p data-part="{_e(p.title.lower())}"><b>{_e(p.title)}.</b> {_e(p.text)}{verdict}</p>'


def summary_paragraphs(data: ReportData) -> list:
    """The summary's paragraphs (:mod:`.summary`) for the runs present."""
    out = []
    if data.analyze is not None:
        out.append(heads_paragraph(data.analyze, interpret(data.analyze)))
    if data.segment is not None:
        out.append(segment_paragraph(data.segment))
    if data.rank is not None:
        out.append(rank_paragraph(data.rank))
    return out


def _summary(data: ReportData) -> str:
    parts = ['<div class="summary">']
    parts += [_paragraph_html(p) for p in summary_paragraphs(data)]
    for kind, what in (("analyze", "heads"), ("segment", "segmentation"), ("rank", "pruning")):
        if getattr(data, kind) is None:
            parts.append(f'<p class="unchecked"><b>{what.capitalize()}.</b> No {kind} run given '
                         f'(<code>{_e(MAKES[kind])}</code>).</p>')
    parts.append("</div>")
    return "".join(parts)


def random_banner(datas) -> str:
    """The red banner when any run is of a model with random weights."""
    if any(isinstance(r.summary.get("model"), dict) and r.summary["model"].get("random_weights")
           for d in datas for r in d.runs()):
        return ('<div class="banner">RANDOM WEIGHTS: a model here is a built-in architecture with random weights; '
                "its heads show the pipeline, not a finding about a trained SAT.</div>")
    return ""


def page(title: str, sections, *, subtitle: str = "", banner: str = "", progress: bool = False) -> str:
    """A whole self-contained page: ``sections`` is a sequence of ``(id, label, make)``, ``make()`` the
    section's inner HTML (called in order, under a progress bar when asked). Every report page,
    one model's or several side by side, is built by this one function: one place for the CSP, the
    style, the navigation and the sort script."""
    import satkern

    todo = list(sections)
    if progress:
        import sys

        from tqdm import tqdm

        todo = tqdm(todo, desc="report", unit="section", file=sys.stderr, dynamic_ncols=True)
    body = "".join(f'<section id="{sid}"><h2>{_e(label)}</h2>{make()}</section>' for sid, label, make in todo)
    nav = "".join(f'<a href="#{sid}">{_e(label)}</a>' for sid, label, _ in sections)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>Self-attention of a self-supervised speech transformer, after Yang, Liu "
            f"&amp; Lee (2020). Made by satkern {_e(getattr(satkern, '__version__', ''))} on {stamp}.{subtitle}</p></header>"
            f"{banner}<nav>{nav}</nav><main>{body}</main><script>{SORT_SCRIPT}</script></body></html>\n")


def render(data: ReportData, *, title: Optional[str] = None, progress: bool = False) -> str:
    """The whole page of one model's runs as a string. The sections are :data:`SECTIONS`, each drawn by
    the function of the same id in ``body`` below: a new section is one entry in each."""
    summary = (data.analyze or data.segment or data.rank).summary
    name = _model_line(summary) or "satkern run"
    title = title or f"satkern report: {name}"
    body = {"summary": _summary, "overview": _overview, "head-map": _head_map, "attention-maps": _attention_maps,
            "head-explorer": explorer.section,  # every head of a few utterances, interactive (explorer.py)
            "segmentation": _segmentation, "phoneme-relations": _phoneme_relations, "pruning": _pruning}
    missing = data.missing()
    miss = (f' Missing: {_e(", ".join(missing))}.' if missing else "")
    return page(title, [(sid, label, (lambda f=body[sid]: f(data))) for sid, label in SECTIONS], subtitle=miss,
                banner=random_banner([data]), progress=progress)

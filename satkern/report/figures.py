"""The report's figures: one function per figure, data in, :class:`matplotlib.figure.Figure` out.

Object API only (``Figure`` + ``subplots``; no pyplot state), so any backend works and nothing
opens a window; :func:`to_png` renders with Agg. Each figure names the paper figure it mirrors
(Yang, Liu & Lee 2020). Inputs are plain numpy arrays / pandas frames as the run files hold them.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .summary import task_label

CATEGORY_COLORS = {"global": "#1f77b4", "vertical": "#d62728", "diagonal": "#2ca02c", "": "#7f7f7f"}
# attention weights are mostly tiny: a square-root colour scale shows the structure (gamma 0.5)
MAP_GAMMA = 0.5
DPI = 90  # inline PNGs: sharp enough on screen, small enough to keep the page a few MB
LABEL_PT = 8  # phone labels and PRM ticks: 8 pt at 90 dpi is 10 px, the smallest size read without zooming
# a label needs its own line height plus a little air: 1.3 x 8 pt at 90 dpi = 13 px between label centres
LABEL_GAP_PX = 1.3 * LABEL_PT * DPI / 72
UNIFORM_STYLE = dict(color="0.35", lw=0.9, ls=(0, (4, 3)))  # the uniform-attention reference lines


def to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """PNG bytes of ``fig`` rendered with Agg."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _category_colors(categories: Sequence[str]):
    return [CATEGORY_COLORS.get(str(c), CATEGORY_COLORS[""]) for c in categories]


def _legend_categories(ax, categories: Sequence[str]) -> None:
    for c in ("global", "vertical", "diagonal"):
        if c in set(map(str, categories)):
            ax.scatter([], [], color=CATEGORY_COLORS[c], label=c, s=18)
    if len(set(map(str, categories)) - {""}):
        ax.legend(fontsize=8, loc="best")


def _few_ticks(ax) -> None:
    """At most 5 ticks per axis, so tick labels of long decimals do not run together."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))


def head_scatter(G, V, D, categories: Sequence[str], *, uniform=None, near_uniform=None, length_free: bool = False,
                 title: str = "") -> Figure:
    """Every head in the G/V/D space, coloured by category (the head map of sec. 4).

    ``uniform``: ``(G, V, D)`` of uniform attention, drawn as dashed lines (the point where they cross
    is uniform attention); ``near_uniform``: a bool per head, ringed in black; ``length_free``: the
    values are the length-free ones (axis labels say so)."""
    G, V, D = (np.asarray(x, dtype=float) for x in (G, V, D))
    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 3)
    colors = _category_colors(categories)
    names = (("G / log T", "1 + V / log T", "1 + D / |D_unif|") if length_free else
             ("globalness G", "verticality V", "diagonality D"))
    ref = (None, None, None) if uniform is None else tuple(float(u) for u in uniform)
    ring = np.zeros(len(G), bool) if near_uniform is None else np.asarray(near_uniform, dtype=bool)
    for ax, (x, y, xl, yl, rx, ry) in zip(axes, ((G, V, names[0], names[1], ref[0], ref[1]),
                                                 (G, D, names[0], names[2], ref[0], ref[2]),
                                                 (V, D, names[1], names[2], ref[1], ref[2]))):
        ax.scatter(x, y, c=colors, s=18, alpha=0.85, edgecolors="none")
        if ring.any():
            ax.scatter(x[ring], y[ring], s=70, facecolors="none", edgecolors="black", linewidths=0.8)
        if rx is not None:
            ax.axvline(rx, **UNIFORM_STYLE)
            ax.axhline(ry, **UNIFORM_STYLE)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.ticklabel_format(useOffset=False)  # untrained models: values alike to 5 digits; show them whole
        _few_ticks(ax)
        ax.grid(alpha=0.3)
    handles = [axes[0].scatter([], [], color=CATEGORY_COLORS[c], s=18, label=c) for c in ("global", "vertical", "diagonal")
               if c in set(map(str, categories))]
    if rx is not None:
        handles += axes[0].plot([], [], label="uniform attention", **UNIFORM_STYLE)
    if ring.any():
        handles.append(axes[0].scatter([], [], s=70, facecolors="none", edgecolors="black", linewidths=0.8,
                                       label="near uniform"))
    fig.suptitle(title or "Heads by globalness, verticality and diagonality (each dot one head)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    if handles:  # below the panels, where it hides no head
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    return fig


def head_intervals(table, *, interval=(5, 95)) -> Figure:
    """Per-utterance spread of every head's length-free G, V, D, W: the mean over utterances (dot)
    and the interval between two percentiles over utterances (bar), one panel per metric, heads in
    (layer, head) order; the dashed line is uniform attention's value.

    ``table``: the rows of :class:`satkern.report.interpret.Interpretation` (``{m}_free``, ``{m}_lo``,
    ``{m}_hi``, ``layer``, ``head``, ``category``)."""
    from ..metrics import LENGTH_FREE_UNIFORM

    t = table.reset_index(drop=True)
    n = len(t)
    x = np.arange(n)
    colors = _category_colors(t["category"])
    names = {"G": "G / log T", "V": "1 + V / log T", "D": "1 + D / |D_unif|", "W": "(W - 1/T) / (1 - 1/T)"}
    fig = Figure(figsize=(max(8.0, 0.12 * n + 2.5), 7.6))
    axes = fig.subplots(4, 1, sharex=True)
    for ax, m in zip(axes, "GVDW"):
        mean, lo, hi = (t[f"{m}{s}"].to_numpy(dtype=float) for s in ("_free", "_lo", "_hi"))
        ok = np.isfinite(lo) & np.isfinite(hi)
        for i in np.flatnonzero(ok):
            ax.plot([x[i], x[i]], [lo[i], hi[i]], color=colors[i], lw=1.6, alpha=0.55, solid_capstyle="butt")
        ax.scatter(x, mean, c=colors, s=12, zorder=3, edgecolors="none")
        ax.axhline(LENGTH_FREE_UNIFORM[m], **UNIFORM_STYLE)
        ax.set_ylabel(names[m], fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.grid(alpha=0.3, axis="y")
    layers = t["layer"].to_numpy()
    starts = [i for i in range(n) if i == 0 or layers[i] != layers[i - 1]]
    for ax in axes:
        for i in starts[1:]:
            ax.axvline(i - 0.5, color="0.85", lw=0.6)
    step = max(1, int(np.ceil(len(starts) / 24)))  # at most ~24 layer labels
    axes[-1].set_xticks([starts[k] for k in range(0, len(starts), step)])
    axes[-1].set_xticklabels([f"L{layers[starts[k]]}" for k in range(0, len(starts), step)], fontsize=8)
    axes[-1].set_xlabel("heads in (layer, head) order; grey lines separate layers")
    axes[0].plot([], [], label="uniform attention", **UNIFORM_STYLE)
    axes[0].plot([], [], color="0.4", lw=1.6, alpha=0.55, label=f"{interval[0]:g}-{interval[1]:g}% of utterances")
    axes[0].scatter([], [], color="0.4", s=12, label="mean over utterances")
    axes[0].legend(fontsize=7, loc="best", ncol=3)
    fig.suptitle("Per-utterance spread of every head's length-free values", fontsize=10)
    fig.tight_layout()
    return fig


def category_counts(layers, categories: Sequence[str]) -> Figure:
    """Heads of each category per layer (stacked bars)."""
    layers = np.asarray(layers, dtype=int)
    cats = np.asarray(categories, dtype=str)
    L = int(layers.max()) + 1 if layers.size else 0
    fig = Figure(figsize=(max(4.5, 0.45 * L + 2), 3.2))
    ax = fig.subplots()
    bottom = np.zeros(L)
    for c in ("global", "vertical", "diagonal"):
        n = np.array([int(((layers == l) & (cats == c)).sum()) for l in range(L)])
        ax.bar(np.arange(L), n, bottom=bottom, color=CATEGORY_COLORS[c], label=c)
        bottom += n
    ax.set_xlabel("layer")
    ax.set_ylabel("heads")
    ax.set_xticks(np.arange(L))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    ax.set_title("Head categories per layer", fontsize=10)
    fig.tight_layout()
    return fig


def pruning_rank(values, descending: bool) -> np.ndarray:
    """Position of each head in a pruning order (1 = pruned first), ties by index (METRICS.md)."""
    x = np.asarray(values, dtype=float)
    key = -x if descending else x
    key = np.where(np.isnan(key), np.inf, key)
    order = np.argsort(key, kind="stable")
    r = np.empty(len(x), dtype=int)
    r[order] = np.arange(1, len(x) + 1)
    return r


def rank_g_vs_w(G, W, categories: Sequence[str]) -> Figure:
    """Fig. 6a: each head's place in the pruning order by G (highest first) against by W (lowest first)."""
    rg, rw = pruning_rank(G, True), pruning_rank(W, False)
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.subplots()
    ax.scatter(rg, rw, c=_category_colors(categories), s=20, edgecolors="none")
    n = len(rg)
    ax.plot([1, n], [1, n], color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("rank by G (1 = most global, pruned first)")
    ax.set_ylabel("rank by W (1 = lowest max weight, pruned first)")
    if n > 1:
        rho = np.corrcoef(rg, rw)[0, 1]
        ax.set_title(f"Rank by G vs rank by W (Fig. 6a); Spearman {rho:.2f}", fontsize=10)
    _legend_categories(ax, categories)
    fig.tight_layout()
    return fig


def thin_labels(mids, min_gap: float) -> list:
    """Indices of the labels kept when every kept label's centre is at least ``min_gap`` from the
    previous kept one (left to right; a label is never moved, only left out)."""
    keep, last = [], -np.inf
    for i in np.argsort(np.asarray(mids, dtype=float), kind="stable"):
        if mids[i] - last >= min_gap:
            keep.append(int(i))
            last = mids[i]
    return keep


def _axis_px(fig: Figure, ax, vertical: bool) -> float:
    box = ax.get_position()
    w, h = fig.get_size_inches()
    return (box.height * h if vertical else box.width * w) * DPI


def _phone_axis(fig, ax, starts, ends, labels, vertical: bool, t_max: float) -> int:
    """Phone boundaries (white) on a spectrogram axis and the labels that fit at :data:`LABEL_PT`
    (thinned so that no two overlap); returns how many labels were left out."""
    import matplotlib.patheffects as pe

    for s in list(starts) + ([ends[-1]] if len(ends) else []):
        (ax.axhline if vertical else ax.axvline)(s, color="white", lw=0.6, alpha=0.9)
    mids = np.array([0.5 * (a + b) for a, b in zip(starts, ends)], dtype=float)
    inside = [i for i in range(len(mids)) if 0 <= mids[i] <= t_max]
    if not inside or t_max <= 0:
        return 0
    gap = t_max * LABEL_GAP_PX / max(_axis_px(fig, ax, vertical), 1.0)
    keep = [inside[k] for k in thin_labels(mids[inside], gap)]
    outline = [pe.withStroke(linewidth=2, foreground="black")]
    for i in keep:
        if vertical:  # inside the left spectrogram, white on a dark outline, horizontal
            ax.text(0.5, mids[i], str(labels[i]), transform=ax.get_yaxis_transform(), fontsize=LABEL_PT - 1,
                    va="center", ha="center", color="white", path_effects=outline, clip_on=True)
        else:
            ax.text(mids[i], 1.02, str(labels[i]), transform=ax.get_xaxis_transform(), fontsize=LABEL_PT, ha="center",
                    va="bottom", rotation=90, clip_on=False)
    return len(inside) - len(keep)


def attention_map(A, logmel, *, frame_rate_hz: float, logmel_hop_s: float, phone_starts=(), phone_ends=(),
                  phone_labels=(), title: str = "") -> Figure:
    """Fig. 1: one head's map on one utterance, the log-mel spectrogram along both axes, phone
    boundaries (white lines) and labels (8 pt, left out where they would overlap: see :func:`thin_labels`).

    ``A`` ``[T, T]`` (rows: queries, columns: keys; model frame ``t`` spans
    ``[t, t+1) / frame_rate_hz`` seconds); ``logmel`` ``[T_mel, n_mels]``, frame ``t`` centred at
    ``t * logmel_hop_s``; phones in seconds.
    """
    A = np.asarray(A, dtype=np.float32)
    mel = np.asarray(logmel, dtype=np.float32)
    T = A.shape[0]
    dur = T / float(frame_rate_hz)
    fig = Figure(figsize=(5.6, 5.6))
    gs = fig.add_gridspec(2, 2, width_ratios=(1, 5), height_ratios=(1, 5), wspace=0.05, hspace=0.05)
    ax_top = fig.add_subplot(gs[0, 1])
    ax_left = fig.add_subplot(gs[1, 0])
    ax = fig.add_subplot(gs[1, 1], sharex=ax_top, sharey=ax_left)
    t_mel = mel.shape[0] * logmel_hop_s
    ext = (-0.5 * logmel_hop_s, t_mel - 0.5 * logmel_hop_s)
    ax_top.imshow(mel.T, origin="lower", aspect="auto", cmap="magma", extent=(ext[0], ext[1], 0, mel.shape[1]))
    ax_left.imshow(mel[:, ::-1], origin="upper", aspect="auto", cmap="magma", extent=(0, mel.shape[1], ext[1], ext[0]))
    vmax = float(np.nanmax(A)) if A.size else 1.0
    im = ax.imshow(A, origin="upper", aspect="auto", cmap="viridis", extent=(0, dur, dur, 0),
                   norm=PowerNorm(MAP_GAMMA, vmin=0.0, vmax=max(vmax, 1e-12)), interpolation="nearest")
    hidden = _phone_axis(fig, ax_top, phone_starts, phone_ends, phone_labels, vertical=False, t_max=dur)
    _phone_axis(fig, ax_left, phone_starts, phone_ends, phone_labels, vertical=True, t_max=dur)
    if hidden:
        ax.text(0.0, -0.16, f"{hidden} phone labels left out where they would overlap (boundaries all drawn)",
                transform=ax.transAxes, fontsize=7, color="0.35", va="top")
    for s in phone_starts:
        ax.axvline(s, color="white", lw=0.3, alpha=0.35)
        ax.axhline(s, color="white", lw=0.3, alpha=0.35)
    ax.set_xlim(0, dur)
    ax.set_ylim(dur, 0)
    ax_top.tick_params(labelbottom=False, labelleft=False, left=False)
    ax.tick_params(labelleft=False)
    ax_left.tick_params(labelbottom=False, bottom=False)
    ax.set_xlabel("key time (s)")
    ax_left.set_ylabel("query time (s)")
    cax = ax.inset_axes((1.02, 0.0, 0.03, 0.4))
    fig.colorbar(im, cax=cax)
    cax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9, y=0.995)
    return fig


def segmentation(map_, kf, score, *, hop: float, true_s=(), pred_s=(), title: str = "") -> Figure:
    """Fig. 2: a block-diagonal head's map with true (white) and predicted (red) boundaries, the
    filtered kernel-gram matrix Kf and the score curve S with its minima as boundaries."""
    A = np.asarray(map_, dtype=np.float32)
    T = A.shape[0]
    dur = T * hop
    fig = Figure(figsize=(12, 4.0))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": (1, 1, 1.5)})
    axes[0].imshow(A, cmap="viridis", extent=(0, dur, dur, 0), norm=PowerNorm(MAP_GAMMA, vmin=0,
                   vmax=max(float(np.nanmax(A)) if A.size else 1.0, 1e-12)), interpolation="nearest")
    axes[0].set_title("attention map", fontsize=9)
    axes[1].imshow(np.asarray(kf, dtype=np.float32), cmap="Greys", extent=(0, dur, dur, 0), vmin=0, vmax=1,
                   interpolation="nearest")
    axes[1].set_title("filtered kernel-gram matrix Kf", fontsize=9)
    t = (np.arange(T) + 0.5) * hop
    axes[2].plot(t, np.asarray(score, dtype=float), color="black", lw=1)
    axes[2].set_title("score S (boundaries at its minimal plateaus)", fontsize=9)
    axes[2].set_xlabel("time (s)")
    for ax in axes[:2]:
        ax.set_xlabel("time (s)")
        for b in true_s:
            ax.axvline(b, color="white", lw=0.7, ls="--")
        for b in pred_s:
            ax.axhline(b, color="red", lw=0.7)
    for i, b in enumerate(true_s):
        axes[2].axvline(b, color="tab:blue", lw=0.8, ls="--", label="true" if i == 0 else None)
    for i, b in enumerate(pred_s):
        axes[2].axvline(b, color="red", lw=0.8, alpha=0.7, label="predicted" if i == 0 else None)
    if len(true_s) or len(pred_s):
        axes[2].legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def pareto_front(recall, precision):
    """Indices of the points no other point beats in both recall and precision (ties kept once),
    by increasing recall: the best precision reachable at each recall by some beta."""
    r, p = np.asarray(recall, dtype=float), np.asarray(precision, dtype=float)
    order = sorted(range(len(r)), key=lambda i: (-r[i], -p[i]))
    keep, best_p = [], -np.inf
    for i in order:
        if p[i] > best_p:
            keep.append(i)
            best_p = p[i]
    return keep[::-1]


def pr_curves(pr, tuned=None) -> Figure:
    """Fig. 2e: precision against recall, one colour per feature set (and head), beta swept at the
    tuned alpha.

    Each point is one beta. Raising beta drops kernel-gram entries, and the score curve's minimal
    plateaus then split or merge, so the boundary sets of neighbouring betas are not nested and
    precision and recall both move non-monotonically: the thin line joins the points in beta order
    and zigzags. The thick line is the upper-right envelope (:func:`pareto_front`: the best precision
    any beta reaches at that recall or more), a summary of the same points, not a fit. Points with
    neither precision nor recall (no boundary found within tolerance) are left out.
    ``tuned[label] = (recall, precision)`` rings each set's tuned beta."""
    fig = Figure(figsize=(5.6, 4.6))
    ax = fig.subplots()
    heads = pr["head"].astype(object).fillna("").astype(str)
    for (feat, head), part in pr.assign(head=heads).groupby(["features", "head"], sort=True):
        part = part.sort_values("beta")
        part = part[(part["precision"] > 0) | (part["recall"] > 0)]
        if part.empty:
            continue
        label = f"{feat} {head}".strip()
        line = ax.plot(part["recall"], part["precision"], marker=".", ms=3, lw=0.7, alpha=0.45)[0]
        front = part.iloc[pareto_front(part["recall"].to_numpy(), part["precision"].to_numpy())]
        ax.plot(front["recall"], front["precision"], lw=2.0, color=line.get_color(), label=label)
        if tuned and label in tuned:
            r, p = tuned[label]
            ax.plot([r], [p], marker="o", ms=8, mfc="none", color=line.get_color())
    ax.plot([], [], color="0.4", lw=0.7, alpha=0.6, marker=".", ms=3, label="every beta, in beta order")
    ax.plot([], [], color="0.4", lw=2.0, label="upper-right envelope")
    ax.set_xlabel("recall (hit rate)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Precision-recall of phoneme segmentation (Fig. 2e)", fontsize=10)
    fig.tight_layout()
    return fig


PRM_GREY = ("grey: undefined (P_U = 0: no utterance holds both phones, so uniform attention gives that pair "
            "no weight to compare with)")


def phoneme_relation_map(P, labels: Sequence[str], title: str = "") -> Figure:
    """Fig. 3: one head's phoneme relation map P[m, n] = (P' - P_U) / P_U (query phone m, key
    phone n); 0 = as uniform attention; NaN (undefined, :data:`PRM_GREY`) grey. Phones that never
    occur (their whole row and column undefined) are left out and counted under the map; every tick
    label is drawn at :data:`LABEL_PT` with room for it (the figure grows with the phone count)."""
    P = np.asarray(P, dtype=float)
    labels = list(labels)
    seen = [i for i in range(P.shape[0]) if np.isfinite(P[i, :]).any() or np.isfinite(P[:, i]).any()]
    dropped = P.shape[0] - len(seen)
    P = P[np.ix_(seen, seen)]
    labels = [labels[i] for i in seen]
    Y = P.shape[0]
    cell_in = LABEL_GAP_PX / DPI  # one label's height per cell
    side = max(3.5, cell_in * Y)
    fig = Figure(figsize=(side + 2.2, side + 1.8))
    ax = fig.subplots()
    finite = P[np.isfinite(P)]
    lim = float(np.max(np.abs(finite))) if finite.size else 1.0
    lim = max(lim, 1e-9)
    cmap = __import__("matplotlib").colormaps["RdBu_r"].with_extremes(bad="0.8")
    im = ax.imshow(np.ma.masked_invalid(P), cmap=cmap, norm=TwoSlopeNorm(0.0, -lim, lim), interpolation="nearest")
    ax.set_xticks(np.arange(Y))
    ax.set_yticks(np.arange(Y))
    ax.set_xticklabels(labels, rotation=90, fontsize=LABEL_PT)
    ax.set_yticklabels(labels, fontsize=LABEL_PT)
    ax.set_xlabel("key phone n")
    ax.set_ylabel("query phone m")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("(P' - P_U) / P_U: red more, blue less than uniform", fontsize=8)
    note = "grey cells: undefined, no utterance holds both phones (P_U = 0)"
    if dropped:
        note += f"; {dropped} phones that never occur left out"
    ax.set_title(f"{title}\n{note}" if title else note, fontsize=8)
    fig.tight_layout()
    return fig


def verticality_vs_concentration(V, concentration, categories: Sequence[str]) -> Figure:
    """Fig. 4: each head's verticality V against its extreme concentrations (max and min over
    phones n of C[n]); vertical heads focus on (large C) or neglect (small C) specific phones."""
    V = np.asarray(V, dtype=float)
    C = np.asarray(concentration, dtype=float)  # [N heads, Y]
    with np.errstate(all="ignore"):
        cmax = np.where(np.isfinite(C).any(-1), np.nanmax(np.where(np.isfinite(C), C, -np.inf), -1), np.nan)
        cmin = np.where(np.isfinite(C).any(-1), np.nanmin(np.where(np.isfinite(C), C, np.inf), -1), np.nan)
    fig = Figure(figsize=(5.4, 4.2))
    ax = fig.subplots()
    colors = _category_colors(categories)
    ax.scatter(V, cmax, c=colors, marker="^", s=22, edgecolors="none")
    ax.scatter(V, cmin, c=colors, marker="v", s=22, edgecolors="none")
    ax.scatter([], [], marker="^", color="0.3", label="max over phones of C[n]")
    ax.scatter([], [], marker="v", color="0.3", label="min over phones of C[n]")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("verticality V")
    ax.set_ylabel("concentration C")
    ax.ticklabel_format(useOffset=False)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title("Verticality against extreme concentration (Fig. 4)", fontsize=10)
    fig.tight_layout()
    return fig


def _line_per_order(ax, part, x: str, order_col: str = "order") -> None:
    for order, g in part.groupby(order_col, sort=True):
        seeds = g["seed"].nunique() if "seed" in g.columns else 1
        stats = g.groupby(x)["value"].agg(["mean", "min", "max"]).sort_index()
        label = f"{order} (mean of {seeds} seeds)" if seeds > 1 else str(order)
        line = ax.plot(stats.index, stats["mean"], marker=".", ms=4, lw=1.2, label=label)[0]
        if seeds > 1:
            ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.2)


def pruning_curves(curves) -> Figure:
    """Fig. 5: each task's value after cumulative head pruning, one line per order (random
    orders: mean and min-max band over seeds); span pruning, when present, in a second row."""
    import pandas as pd

    df = curves.copy()
    has_span = "span" in df.columns
    span_num = pd.to_numeric(df["span"], errors="coerce") if has_span else pd.Series(np.nan, index=df.index)
    is_span = span_num.notna() & (df["order"].astype(str).str.lower() == "span") if has_span else span_num.notna()
    head_rows, span_rows = df[~is_span], df[is_span].assign(span=span_num[is_span])
    tasks = sorted(df["task"].astype(str).unique())
    nrow = 1 + int(not span_rows.empty)
    fig = Figure(figsize=(3.6 * max(len(tasks), 1), 3.2 * nrow))
    axes = np.atleast_2d(fig.subplots(nrow, max(len(tasks), 1), squeeze=False))
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        part = head_rows[head_rows["task"].astype(str) == task]
        if not part.empty:
            _line_per_order(ax, part, "n_pruned")
        ax.set_title(f"{task}: head pruning", fontsize=9)
        ax.set_xlabel("heads pruned")
        ax.set_ylabel(task_label(task), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        if nrow > 1:
            ax2 = axes[1, j]
            sp = span_rows[span_rows["task"].astype(str) == task]
            mode = "span_mode" if "span_mode" in sp.columns else "order"
            if not sp.empty:
                _line_per_order(ax2, sp, "span", order_col=mode)
                ax2.set_xscale("log", base=2)
            ax2.set_title(f"{task}: span limited to r", fontsize=9)
            ax2.set_xlabel("span r (frames)")
            ax2.set_ylabel(task_label(task), fontsize=8)
            ax2.grid(alpha=0.3)
            ax2.legend(fontsize=6)
    fig.suptitle("Importance ranking: pruning curves (Fig. 5)", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- several models side by side (compare.py)
def compare_head_scatter(models) -> Figure:
    """Every model's heads in the length-free G/V/D space, one row per model, every panel of a column
    on the same axes (so the models' clouds compare by position). ``models``: ``[(label, table)]``,
    ``table`` as :class:`satkern.report.interpret.Interpretation`'s."""
    n = len(models)
    fig = Figure(figsize=(11, 3.0 * n + 0.6))
    axes = np.atleast_2d(fig.subplots(n, 3, sharex="col", sharey="col", squeeze=False))
    pairs = (("G_free", "V_free", "G / log T", "1 + V / log T", 1.0, 0.0), ("G_free", "D_free", "G / log T",
             "1 + D / |D_unif|", 1.0, 0.0), ("V_free", "D_free", "1 + V / log T", "1 + D / |D_unif|", 0.0, 0.0))
    for i, (label, t) in enumerate(models):
        colors = _category_colors(t["category"])
        ring = t["near_uniform"].to_numpy(dtype=bool)
        for j, (xc, yc, xl, yl, rx, ry) in enumerate(pairs):
            ax = axes[i, j]
            x, y = t[xc].to_numpy(dtype=float), t[yc].to_numpy(dtype=float)
            ax.scatter(x, y, c=colors, s=16, alpha=0.85, edgecolors="none")
            if ring.any():
                ax.scatter(x[ring], y[ring], s=60, facecolors="none", edgecolors="black", linewidths=0.7)
            ax.axvline(rx, **UNIFORM_STYLE)
            ax.axhline(ry, **UNIFORM_STYLE)
            ax.set_xlabel(xl, fontsize=8)
            ax.set_ylabel(yl, fontsize=8)
            _few_ticks(ax)
            ax.grid(alpha=0.3)
        axes[i, 0].set_title(f"{label}: {int(ring.sum())} of {len(t)} heads near uniform", fontsize=9, loc="left")
    handles = [axes[0, 0].scatter([], [], color=CATEGORY_COLORS[c], s=16, label=c) for c in ("global", "vertical", "diagonal")]
    handles += axes[0, 0].plot([], [], label="uniform attention", **UNIFORM_STYLE)
    handles.append(axes[0, 0].scatter([], [], s=60, facecolors="none", edgecolors="black", linewidths=0.7,
                                      label="near uniform"))
    fig.suptitle("Heads of each model by length-free G, V, D (same axes in every column)", fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / (3.0 * n + 0.6), 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    return fig


def compare_categories(models) -> Figure:
    """Heads of each category per layer, one panel per model, on the same y axis; near-uniform heads
    hatched inside their category's bar. ``models``: ``[(label, table)]``."""
    n = len(models)
    L = max(int(t["layer"].max()) + 1 for _, t in models)
    fig = Figure(figsize=(max(4.5, 0.4 * L + 2) * min(n, 3), 3.2 * int(np.ceil(n / 3))))
    axes = np.atleast_1d(fig.subplots(int(np.ceil(n / 3)), min(n, 3), sharey=True, squeeze=False).ravel())
    for ax, (label, t) in zip(axes, models):
        layers = t["layer"].to_numpy(dtype=int)
        cats = t["category"].astype(str).to_numpy()
        near = t["near_uniform"].to_numpy(dtype=bool)
        bottom = np.zeros(L)
        for c in ("global", "vertical", "diagonal"):
            k = np.array([int(((layers == l) & (cats == c)).sum()) for l in range(L)])
            kn = np.array([int(((layers == l) & (cats == c) & near).sum()) for l in range(L)])
            ax.bar(np.arange(L), k, bottom=bottom, color=CATEGORY_COLORS[c], label=c)
            ax.bar(np.arange(L), kn, bottom=bottom, color="none", edgecolor="white", hatch="///", lw=0)
            bottom += k
        ax.set_title(f"{label} ({int(near.sum())} near uniform, hatched)", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_xticks(np.arange(L))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[len(models):]:
        ax.set_visible(False)
    axes[0].set_ylabel("heads")
    axes[0].legend(fontsize=7)
    fig.suptitle("Head categories per layer (categories rank heads within each model)", fontsize=10)
    fig.tight_layout()
    return fig


def compare_pruning(models) -> Figure:
    """Each task's head-pruning curves, one row per task and one column per model, every panel of a row
    on the same axes. ``models``: ``[(label, curves)]``."""
    tasks = sorted({str(t) for _, c in models for t in c["task"].unique()})
    n = len(models)
    fig = Figure(figsize=(3.8 * n, 3.1 * max(len(tasks), 1)))
    axes = np.atleast_2d(fig.subplots(max(len(tasks), 1), n, sharex=True, sharey="row", squeeze=False))
    for i, task in enumerate(tasks):
        for j, (label, curves) in enumerate(models):
            ax = axes[i, j]
            part = curves[(curves["task"].astype(str) == task) & (curves["order"].astype(str) != "span")]
            if not part.empty:
                _line_per_order(ax, part, "n_pruned")
                ax.legend(fontsize=6)
            else:
                ax.text(0.5, 0.5, "no curve for this task", transform=ax.transAxes, ha="center", fontsize=8)
            ax.set_title(f"{label}: {task}", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(task_label(task), fontsize=8)
            if i == len(tasks) - 1:
                ax.set_xlabel("heads pruned")
    fig.suptitle("Pruning curves of each model (same axes along a row)", fontsize=10)
    fig.tight_layout()
    return fig


def compare_pr(models) -> Figure:
    """Every model's precision-recall curves (upper-right envelopes, :func:`pareto_front`) on one pair of
    axes per feature set: ``models`` ``[(label, pr)]``."""
    feats = sorted({str(f) for _, pr in models for f in pr["features"].unique()})
    fig = Figure(figsize=(4.4 * max(len(feats), 1), 4.2))
    axes = np.atleast_1d(fig.subplots(1, max(len(feats), 1), squeeze=False).ravel())
    for ax, feat in zip(axes, feats):
        for label, pr in models:
            part = pr[pr["features"].astype(str) == feat]
            part = part[(part["precision"] > 0) | (part["recall"] > 0)]
            if part.empty:
                continue
            for head, h in part.groupby(part["head"].astype(object).fillna("").astype(str)):
                front = h.iloc[pareto_front(h["recall"].to_numpy(), h["precision"].to_numpy())]
                ax.plot(front["recall"], front["precision"], lw=1.6, label=f"{label} {head}".strip())
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("recall (hit rate)")
        ax.set_ylabel("precision")
        ax.set_title(f"{feat}: upper-right envelope over beta", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    fig.suptitle("Precision-recall of phoneme segmentation, models on the same axes", fontsize=10)
    fig.tight_layout()
    return fig

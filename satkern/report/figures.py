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

CATEGORY_COLORS = {"global": "#1f77b4", "vertical": "#d62728", "diagonal": "#2ca02c", "": "#7f7f7f"}
# attention weights are mostly tiny: a square-root colour scale shows the structure (gamma 0.5)
MAP_GAMMA = 0.5
DPI = 90  # inline PNGs: sharp enough on screen, small enough to keep the page a few MB


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


def head_scatter(G, V, D, categories: Sequence[str]) -> Figure:
    """Every head in the G/V/D space, coloured by category (the head map of sec. 4)."""
    G, V, D = (np.asarray(x, dtype=float) for x in (G, V, D))
    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, 3)
    colors = _category_colors(categories)
    for ax, (x, y, xl, yl) in zip(axes, ((G, V, "globalness G", "verticality V"), (G, D, "globalness G", "diagonality D"),
                                         (V, D, "verticality V", "diagonality D"))):
        ax.scatter(x, y, c=colors, s=18, alpha=0.85, edgecolors="none")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.ticklabel_format(useOffset=False)  # untrained models: values alike to 5 digits; show them whole
        ax.grid(alpha=0.3)
    _legend_categories(axes[0], categories)
    fig.suptitle("Heads by globalness, verticality and diagonality (each dot one head)", fontsize=10)
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


def _phone_axis(ax, starts, ends, labels, vertical: bool, t_max: float, show_labels: bool = True) -> None:
    for s in list(starts) + ([ends[-1]] if len(ends) else []):
        (ax.axhline if vertical else ax.axvline)(s, color="white", lw=0.6, alpha=0.9)
    if show_labels:
        for a, b, lab in zip(starts, ends, labels):
            mid = 0.5 * (a + b)
            if 0 <= mid <= t_max:
                if vertical:
                    ax.text(1.01, mid, str(lab), transform=ax.get_yaxis_transform(), fontsize=6, va="center", ha="left",
                            clip_on=False)
                else:
                    ax.text(mid, 1.02, str(lab), transform=ax.get_xaxis_transform(), fontsize=6, ha="center",
                            va="bottom", rotation=90, clip_on=False)


def attention_map(A, logmel, *, frame_rate_hz: float, logmel_hop_s: float, phone_starts=(), phone_ends=(),
                  phone_labels=(), title: str = "") -> Figure:
    """Fig. 1: one head's map on one utterance, the log-mel spectrogram along both axes, phone
    boundaries (white lines) and labels.

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
    _phone_axis(ax_top, phone_starts, phone_ends, phone_labels, vertical=False, t_max=dur)
    _phone_axis(ax_left, phone_starts, phone_ends, phone_labels, vertical=True, t_max=dur, show_labels=False)
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


def pr_curves(pr) -> Figure:
    """Fig. 2e: precision against recall, one line per feature set (and head), beta swept."""
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.subplots()
    heads = pr["head"].fillna("").astype(str)
    for (feat, head), part in pr.assign(head=heads).groupby(["features", "head"], sort=True):
        part = part.sort_values("recall")
        label = f"{feat} {head}".strip()
        ax.plot(part["recall"], part["precision"], marker=".", ms=3, lw=1, label=label)
    ax.set_xlabel("recall (hit rate)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Precision-recall of phoneme segmentation (Fig. 2e)", fontsize=10)
    fig.tight_layout()
    return fig


def phoneme_relation_map(P, labels: Sequence[str], title: str = "") -> Figure:
    """Fig. 3: one head's phoneme relation map P[m, n] = (P' - P_U) / P_U (query phone m, key
    phone n); 0 = as uniform attention; NaN (undefined) grey."""
    P = np.asarray(P, dtype=float)
    Y = P.shape[0]
    fig = Figure(figsize=(max(4.5, 0.2 * Y + 2.5), max(4.0, 0.2 * Y + 2)))
    ax = fig.subplots()
    finite = P[np.isfinite(P)]
    lim = float(np.max(np.abs(finite))) if finite.size else 1.0
    lim = max(lim, 1e-9)
    cmap = __import__("matplotlib").colormaps["RdBu_r"].with_extremes(bad="0.8")
    im = ax.imshow(np.ma.masked_invalid(P), cmap=cmap, norm=TwoSlopeNorm(0.0, -lim, lim), interpolation="nearest")
    fs = 7 if Y <= 30 else 6
    ax.set_xticks(np.arange(Y))
    ax.set_yticks(np.arange(Y))
    ax.set_xticklabels(list(labels), rotation=90, fontsize=fs)
    ax.set_yticklabels(list(labels), fontsize=fs)
    ax.set_xlabel("key phone n")
    ax.set_ylabel("query phone m")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=9)
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
        ax.set_ylabel("value")
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
            ax2.set_ylabel("value")
            ax2.grid(alpha=0.3)
            ax2.legend(fontsize=6)
    fig.suptitle("Importance ranking: pruning curves (Fig. 5)", fontsize=10)
    fig.tight_layout()
    return fig

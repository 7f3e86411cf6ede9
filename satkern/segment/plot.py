"""The precision-recall figure of ``satkern segment`` (matplotlib object API, Agg; no global state)."""
from __future__ import annotations

from typing import Optional


def _pareto_front(recall, precision):
    """Indices of the points no other point beats in both recall and precision, by increasing recall."""
    order = sorted(range(len(recall)), key=lambda i: (-recall[i], -precision[i]))
    keep, best = [], float("-inf")
    for i in order:
        if precision[i] > best:
            keep.append(i)
            best = precision[i]
    return keep[::-1]


def pr_curve_figure(pr, tuned: Optional[dict] = None, title: str = ""):
    """One line per feature set (``pr``: the rows of ``pr_curve.csv`` as a DataFrame: features, head,
    beta, precision, recall), beta swept at the tuned alpha; ``tuned[label] = (recall, precision)``
    marks each set's tuned point. Returns a :class:`matplotlib.figure.Figure`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = []
    for (features, head), part in pr.groupby(["features", "head"], sort=False, dropna=False):
        label = features if not isinstance(head, str) or not head else f"{features} {head}"
        part = part.sort_values("beta")
        part = part[(part["precision"] > 0) | (part["recall"] > 0)]  # no hit at all: no point on the curve
        if part.empty:
            continue
        # the points in beta order zigzag (boundary sets of neighbouring betas are not nested); the thick
        # line is their upper-right envelope, a summary of the same points
        line, = ax.plot(part["recall"], part["precision"], marker=".", markersize=3, linewidth=0.7, alpha=0.45)
        front = part.iloc[_pareto_front(part["recall"].to_numpy(), part["precision"].to_numpy())]
        ax.plot(front["recall"], front["precision"], linewidth=2.0, color=line.get_color(), label=label)
        if tuned and label in tuned:
            r, p = tuned[label]
            ax.plot([r], [p], marker="o", markersize=7, markerfacecolor="none", color=line.get_color())
        labels.append(label)
    ax.set_xlabel("recall (hit rate)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(True, linewidth=0.4, alpha=0.5)
    if labels:
        ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or "phoneme boundaries: beta swept at the tuned alpha (circle: tuned beta)\n"
                 "thin: every beta in beta order (zigzags: boundary sets are not nested in beta); "
                 "thick: upper-right envelope", fontsize=8)
    return fig


__all__ = ["pr_curve_figure"]

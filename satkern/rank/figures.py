"""The paper's pruning figures from a curves table (matplotlib object API, Agg backend).

* :func:`figure5` -- Fig. 5: one panel per task, the task's value against the number of pruned
  heads (the y axis names the metric and which way is better), a line per order (random orders: the mean over seeds, with the seeds' range shaded);
* :func:`figure6a` -- Fig. 6a: every head's rank by G against its rank by W (rank 1 = pruned first
  under that order), the first ``k`` heads pruned by G and by W coloured.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .orders import order_by_score

TASK_TITLES = {"reconstruction": "reconstruction L1 (lower is better)", "phone": "phone accuracy, frame (higher is better)",
               "speaker-frame": "speaker accuracy, frame (higher is better)",
               "speaker-utterance": "speaker accuracy, utterance (higher is better)"}
# the y axis of each task's panel: the metric itself
TASK_AXES = {"reconstruction": "L1 (lower is better)", "phone": "accuracy (higher is better)",
             "speaker-frame": "accuracy (higher is better)", "speaker-utterance": "accuracy (higher is better)"}
ORDER_STYLE = {"G": ("tab:blue", "-"), "V": ("tab:orange", "-"), "D": ("tab:green", "-"), "W": ("tab:red", "--"),
               "gradient": ("tab:purple", "-."), "random": ("gray", ":")}


def _figure(nrows: int, ncols: int, size):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def figure5(curves, *, title: Optional[str] = None):
    """Fig. 5 from a curves table (the head-pruning rows; span rows are ignored)."""
    df = curves[curves["order"] != "span"]
    tasks = [t for t in TASK_TITLES if t in set(df["task"])] + sorted(set(df["task"]) - set(TASK_TITLES))
    n = max(len(tasks), 1)
    fig, axes = _figure(1, n, (4.2 * n, 3.6))
    for ax, task in zip(axes[0], tasks):
        d = df[df["task"] == task]
        for order in [o for o in ORDER_STYLE if o in set(d["order"])] + sorted(set(d["order"]) - set(ORDER_STYLE)):
            color, ls = ORDER_STYLE.get(order, ("black", "-"))
            o = d[d["order"] == order]
            g = o.groupby("n_pruned")["value"]
            x = np.asarray(g.mean().index, dtype=float)
            seeds = o["seed"].dropna().unique()
            label = order if len(seeds) <= 1 else f"{order} (mean of {len(seeds)} seeds)"
            ax.plot(x, g.mean().to_numpy(), color=color, ls=ls, marker=".", label=label)
            if len(seeds) > 1:
                ax.fill_between(x, g.min().to_numpy(), g.max().to_numpy(), color=color, alpha=0.2, lw=0)
        ax.set_title(TASK_TITLES.get(task, task), fontsize=10)
        ax.set_ylabel(TASK_AXES.get(task, "value"))
        ax.set_xlabel("heads pruned")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def figure6a(G: np.ndarray, W: np.ndarray, *, k: int = 4, title: Optional[str] = None):
    """Fig. 6a: rank by G (x) against rank by W (y); rank 1 is the first head each order prunes
    (highest G, lowest W). Heads among the first ``k`` of the G order, of the W order, or of both,
    are coloured."""
    g_order = order_by_score(G, high_first=True)
    w_order = order_by_score(W, high_first=False)
    L, H = np.asarray(G).shape
    rank_g = {head: i + 1 for i, head in enumerate(g_order)}
    rank_w = {head: i + 1 for i, head in enumerate(w_order)}
    heads = [(l, h) for l in range(L) for h in range(H)]
    first_g, first_w = set(g_order[:k]), set(w_order[:k])
    fig, axes = _figure(1, 1, (4.6, 4.4))
    ax = axes[0][0]
    groups = [("neither", lambda x: x not in first_g and x not in first_w, "lightgray"),
              (f"first {k} by G", lambda x: x in first_g and x not in first_w, "tab:blue"),
              (f"first {k} by W", lambda x: x in first_w and x not in first_g, "tab:red"),
              (f"first {k} by both", lambda x: x in first_g and x in first_w, "tab:purple")]
    for name, test, color in groups:
        sel = [x for x in heads if test(x)]
        if sel:
            ax.scatter([rank_g[x] for x in sel], [rank_w[x] for x in sel], s=22, color=color, label=name,
                       edgecolors="black", linewidths=0.3)
    n = L * H
    ax.plot([1, n], [1, n], color="black", lw=0.5, alpha=0.5)
    ax.set_xlabel("rank by G (1 = most global, pruned first)")
    ax.set_ylabel("rank by W (1 = lowest max weight, pruned first)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


__all__ = ["figure5", "figure6a"]

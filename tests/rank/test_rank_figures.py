"""The pruning figure names each task's metric and which way is better on its y axis."""
import pandas as pd

from satkern.rank.figures import figure5


def test_figure5_axes_name_the_metric_and_the_better_direction():
    rows = [{"order": o, "seed": 0, "n_pruned": n, "task": t, "value": 0.5 + 0.01 * n}
            for o in ("G", "D") for n in (0, 2, 4) for t in ("reconstruction", "phone")]
    fig = figure5(pd.DataFrame(rows))
    by_title = {ax.get_title(): ax for ax in fig.axes}
    assert by_title["reconstruction L1 (lower is better)"].get_ylabel() == "L1 (lower is better)"
    assert by_title["phone accuracy, frame (higher is better)"].get_ylabel() == "accuracy (higher is better)"
    assert all(ax.get_ylabel() != "value" for ax in fig.axes)

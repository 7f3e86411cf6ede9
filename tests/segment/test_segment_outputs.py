"""TextGrid writer and the precision-recall figure on small data."""
import pandas as pd

from satkern.corpus import parse_textgrid
from satkern.segment.plot import pr_curve_figure
from satkern.segment.textgrid import BOUNDARY_MARK, textgrid_text


def test_textgrid_round_trip(tmp_path):
    tiers = [("attention 3:1", [0.5, 0.125, 1.75]), ('odd "name"', []), ("true", [0.12, 2.5])]
    p = tmp_path / "u.TextGrid"
    p.write_text(textgrid_text(tiers, xmax=2.0))
    back = parse_textgrid(p)
    assert [t.name for t in back] == ["attention 3:1", 'odd "name"', "true"]
    assert all(t.kind == "TextTier" for t in back)
    assert [x[0] for x in back[0].items] == [0.125, 0.5, 1.75]
    assert back[1].items == []
    assert [x[0] for x in back[2].items] == [0.12, 2.0]  # clipped to xmax
    assert {x[1] for x in back[0].items} == {BOUNDARY_MARK}


def test_pr_curve_figure():
    pr = pd.DataFrame({"features": ["attention"] * 3 + ["mfcc"] * 3, "head": ["0:1"] * 3 + [""] * 3,
                       "alpha": 0.1, "beta": [0.5, 1.0, 2.0] * 2, "precision": [0.4, 0.5, 0.7, 0.3, 0.5, 0.6],
                       "recall": [0.9, 0.7, 0.3, 0.8, 0.6, 0.2], "f1": 0.5, "r_value": 0.5})
    fig = pr_curve_figure(pr, {"attention 0:1": (0.7, 0.5)})
    ax = fig.axes[0]
    labels = [l.get_label() for l in ax.get_lines()]
    assert "attention 0:1" in labels and "mfcc" in labels
    assert len(ax.get_lines()) == 5  # per feature set: every beta (thin) and the envelope; one tuned marker
    assert list(ax.get_lines()[0].get_xdata()) == [0.9, 0.7, 0.3]  # in beta order


def test_pr_curve_envelope_leaves_out_dominated_points_and_empty_ones():
    # beta order zigzags: the point (0.5, 0.4) is beaten by (0.6, 0.5); (0, 0) found no boundary
    pr = pd.DataFrame({"features": ["mfcc"] * 5, "head": [""] * 5, "alpha": 0.1, "beta": [0.1, 0.5, 1.0, 2.0, 4.0],
                       "precision": [0.0, 0.3, 0.5, 0.4, 0.7], "recall": [0.0, 0.9, 0.6, 0.5, 0.2], "f1": 0.5,
                       "r_value": 0.5})
    ax = pr_curve_figure(pr).axes[0]
    thin, thick = ax.get_lines()
    assert list(thin.get_xdata()) == [0.9, 0.6, 0.5, 0.2]  # every beta with a hit, in beta order
    assert list(thick.get_xdata()) == [0.2, 0.6, 0.9] and list(thick.get_ydata()) == [0.7, 0.5, 0.3]
    assert thick.get_label() == "mfcc"

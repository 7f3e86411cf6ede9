"""The report's forward-time table: one row per point with k, the minimum and the spread, and the note
that says when the spread is too wide to read a speed-up (rank runs with interleaved timing)."""
import json
import re

import numpy as np
import pandas as pd

from satkern.report import write_report

from report_runs import make_rank

NOTE = "The spread is too wide to read a speed-up"


def _with_timing(folder, spread_of, k=5, wide_spread=None):
    """Rewrite the synthetic rank run's curves.csv with timing columns; ``spread_of(row)`` gives a point's spread."""
    c = pd.read_csv(folder / "curves.csv")
    med = 0.01 + 0.001 * c["n_pruned"] + 0.0001 * c["span"].fillna(0)
    c["forward_s_per_audio_s"] = med
    c["forward_spread"] = [spread_of(r) for _, r in c.iterrows()]
    c["forward_s_per_audio_s_min"] = med * (1 - c["forward_spread"].fillna(0) / 2)
    c["timing_rounds"] = k
    c.to_csv(folder / "curves.csv", index=False)
    if wide_spread is not None:
        s = json.loads((folder / "summary.json").read_text())
        s["timing"] = {"rounds": k, "wide_spread": wide_spread}
        (folder / "summary.json").write_text(json.dumps(s))
    return c


def _speed_section(path):
    text = path.read_text()
    start = text.index("Forward time per audio second at each point")
    return text[start:text.index("</section>", start)]


def test_wide_spread_is_said_with_the_rule(tmp_path):
    folder = make_rank(tmp_path / "rank")
    _with_timing(folder, lambda r: 0.9 if (r["order"] == "G" and r["n_pruned"] == 6) else 0.05)
    sec = _speed_section(write_report([folder], tmp_path / "r.html").path)
    assert NOTE in sec
    assert re.search(r"at 1 of \d+ points \(widest 0\.900\)", sec), sec[:600]
    assert "above 20&nbsp;%" in sec and "differs from 1 by more than both spreads" in sec
    for head in ("median", "min", "spread", "k"):
        assert f">{head}" in sec or f"({head})" in sec
    # one row per point: the two tasks share a point's timing; random has two seeds, span four points
    rows = sec.count("<tr>") - 1
    assert rows == 4 * 4 + 2 * 4 + 4  # G, V, D, W x 4 steps; random x 2 seeds x 4 steps; spans 1, 2, 4, 8


def test_tight_spread_has_no_warning(tmp_path):
    folder = make_rank(tmp_path / "rank")
    _with_timing(folder, lambda r: 0.05)
    sec = _speed_section(write_report([folder], tmp_path / "r.html").path)
    assert NOTE not in sec and "spread is at most 20&nbsp;%" in sec


def test_the_runs_own_limit_and_one_sample_count(tmp_path):
    folder = make_rank(tmp_path / "rank")
    _with_timing(folder, lambda r: 0.05, wide_spread=0.04)  # the run recorded a stricter rule
    sec = _speed_section(write_report([folder], tmp_path / "r.html").path)
    assert NOTE in sec and "above 4&nbsp;%" in sec
    folder2 = make_rank(tmp_path / "rank1")
    _with_timing(folder2, lambda r: np.nan, k=1)  # k = 1: one sample, no spread
    sec = _speed_section(write_report([folder2], tmp_path / "r1.html").path)
    assert NOTE in sec


def test_a_run_without_repeats_says_so(tmp_path):
    folder = make_rank(tmp_path / "rank")  # the old columns: one sample per point
    sec = _speed_section(write_report([folder], tmp_path / "r.html").path)
    assert "timed each point once" in sec and NOTE not in sec

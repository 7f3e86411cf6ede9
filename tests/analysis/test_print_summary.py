"""What `satkern analyze` prints: a short summary (category counts, the most global, vertical and diagonal
head, where heads.csv is), never the per-head table (144 rows for a HuBERT-base)."""
import json
import re
from pathlib import Path

import pandas as pd

from satkern.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
MODEL = "tiny-mockingjay-base"  # 2 layers x 4 heads: 8 rows that must not be printed


def test_analyze_prints_a_summary_not_the_table(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["analyze", "--model", MODEL, "--corpus", str(FIXTURE), "--out", str(out), "--max-utterances", "3",
               "--no-progress"])
    stdout = capsys.readouterr().out
    assert rc == 0
    heads = pd.read_csv(out / "heads.csv")
    assert len(heads) == 8
    # no row of the table, no header of it
    row = re.compile(r"^\s*\d+\s+\d+\s+-?\d+\.\d+\s+-?\d+\.\d+")
    assert not [ln for ln in stdout.splitlines() if row.match(ln)], stdout
    assert not re.search(r"^\s*layer\s+head\s+G\s+V", stdout, re.M), stdout
    # the summary: category counts as in heads.csv, the extreme heads, the path of the table
    counts = heads["category"].value_counts()
    assert (f"categories: global {counts.get('global', 0)}, vertical {counts.get('vertical', 0)}, "
            f"diagonal {counts.get('diagonal', 0)}") in stdout
    summary = json.loads((out / "summary.json").read_text())
    for role, metric in (("global", "G"), ("vertical", "V"), ("diagonal", "D")):
        best = heads.sort_values([metric, "layer", "head"], ascending=[False, True, True]).iloc[0]
        layer, head, value = int(best["layer"]), int(best["head"]), float(best[metric])
        assert f"most {role}: layer {layer} head {head} ({metric} = {value:.4f})" in stdout.splitlines(), stdout
        assert summary["most"][role] == {"layer": layer, "head": head, "metric": metric, "value": value}
    assert f"per-head table (8 heads: layer, head, G, V, D, W, category): {out / 'heads.csv'}" in stdout

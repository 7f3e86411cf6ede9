"""Smoke check of bench_long_audio.py (``pytest benchmarks/test_bench_long_audio.py``; not part of `make test`):
a 6 s recording through tiny-hubert-base before and after, results written where asked, outputs equal."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_long_audio  # noqa: E402


def test_quick_run_writes_both_modes(tmp_path, capsys):
    assert bench_long_audio.main(["--quick", "--threads", "1", "--out-dir", str(tmp_path), "--name", "smoke"]) == 0
    payload = json.loads((tmp_path / "smoke.json").read_text())
    assert payload["model"] == "tiny-hubert-base" and payload["commit"] and "load_average_at_start" in payload
    runs = {r["mode"]: r for r in payload["runs"]}
    assert set(runs) == {"before", "after"}
    assert "in pieces of 64 frames" in runs["after"]["feature_encoder"] and "whole" in runs["before"]["feature_encoder"]
    assert runs["before"]["frames"] == runs["after"]["frames"] == 299  # 6 s at 320 samples per frame
    assert all(r["peak_rss_mib"] > 0 and r["wall_s"] > 0 for r in runs.values())
    assert runs["after"]["hidden_max_abs_diff"] < 1e-4  # float32: the pieces give the whole encoder's result
    assert "| minutes |" in (tmp_path / "smoke.md").read_text()


def test_bad_minutes_is_one_line(capsys):
    with pytest.raises(SystemExit):
        bench_long_audio.main(["--minutes", "0"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--minutes" in err and "> 0" in err

"""What `satkern rank` says about its points: numbers that add up to the total, each part named (it said
"28 points (20 computed, 0 reused)", leaving 8 unexplained: the points every order shares)."""
import json
import re

from satkern.cli import main

from rank_helpers import FIXTURE, MODEL

# 2 orders (G, random#0) over the tiny model's 8 heads, 8 per step: none pruned, all pruned -> 4 head points,
# of which 2 distinct; one span point: 5 points, 3 distinct
ARGS = ["--model", MODEL, "--corpus", str(FIXTURE), "--by", "G,random", "--random-seeds", "1", "--step", "8",
        "--span", "2", "--tasks", "phone", "--probe-steps", "5", "--timing-seconds", "1", "--train-split",
        "TRAIN[:0.6]", "--test-split", "TRAIN[0.6:]", "--train-seconds", "8", "--test-seconds", "4", "--threads", "1",
        "--no-progress"]
REPEATS = ("2 repeats of a point already on the curves (every pruning order starts with no head pruned and ends "
           "with all pruned), measured once")


def _points_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if re.match(r"satkern rank: \d+ points on the curves: ", ln)]
    assert len(lines) == 1, err
    return lines[0]


def test_points_message_adds_up(tmp_path, capsys):
    out = tmp_path / "rank"
    assert main(["rank", *ARGS, "--out", str(out)]) == 0
    line = _points_line(capsys.readouterr().err)
    assert line.startswith(f"satkern rank: 5 points on the curves: 3 measured in this run; {REPEATS}; "), line
    p = json.loads((out / "summary.json").read_text())["points"]
    assert (p["total"], p["distinct"], p["computed_this_run"], p["reused_from_disk"], p["repeats"]) == (5, 3, 3, 0, 2)

    # resumed after it finished: every distinct point read back, none measured
    assert main(["rank", *ARGS, "--out", str(out), "--resume"]) == 0
    line = _points_line(capsys.readouterr().err)
    assert line.startswith("satkern rank: 5 points on the curves: 0 measured in this run; 3 read back from the "
                           f"earlier run in points/ (--resume); {REPEATS}; "), line

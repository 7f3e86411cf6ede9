"""``satkern demo``'s wiring: analyze with maps, then segment and rank (here stand-ins that write run
folders in those formats), then the report over what succeeded."""
import json
from pathlib import Path

import satkern.cli
from satkern.commands import demo

from report_runs import make_segment

MODEL = "tiny-mockingjay-base"


def test_demo_runs_every_step_and_reports_despite_a_crash(tmp_path, monkeypatch, capsys):
    calls = []
    parser, _ = satkern.cli.build_parser()

    def fake_main(argv):
        calls.append(list(argv))
        out = Path(argv[argv.index("--out") + 1])
        if argv[0] == "segment":
            model = json.loads((out.parent / "analyze" / "summary.json").read_text())["model"]
            make_segment(out, model=model)
            return 0
        raise RuntimeError("rank exploded")

    monkeypatch.setattr(satkern.cli, "main", fake_main)
    root = tmp_path / "demo"
    args = parser.parse_args(["demo", "--model", MODEL, "--max-utterances", "2", "--out", str(root), "--no-progress"])
    rc = demo.run(args)
    text = capsys.readouterr()
    assert rc == 1  # a step failed: said so in the exit status
    assert [c[0] for c in calls] == ["segment", "rank"]
    # every step numbered k/N, the same N throughout
    steps = [ln for ln in text.out.splitlines() if ln.startswith("satkern demo ") and "/" in ln.split()[2]]
    assert [ln.split()[2] for ln in steps] == ["1/4:", "2/4:", "3/4:", "4/4:"], text.out
    assert [ln.split()[3] for ln in steps] == ["analyze", "segment:", "rank:", "report"], steps
    assert calls[1][calls[1].index("--heads-from") + 1] == str(root / "analyze" / "heads.csv")
    assert "rank exploded" in text.err and "the rank step crashed" in text.err
    report = root / "report.html"
    assert f"report at {report.resolve()}" in text.out
    html = report.read_text()
    assert 'id="segmentation"' in html and "satkern segment --model MODEL" not in html  # drawn from the run
    assert "satkern rank --model MODEL --corpus CORPUS --out DIR" in html  # missing, with the command
    assert (root / "analyze" / "maps.npz").exists()


def test_demo_skips_absent_steps(tmp_path, capsys):
    rc = satkern.cli.main(["demo", "--model", MODEL, "--max-utterances", "2", "--out", str(tmp_path / "d"),
                           "--no-progress", "--maps", "0", "--skip", "segment,rank"])
    out = capsys.readouterr().out
    assert rc == 0 and "segment skipped (--skip)" in out and "rank skipped (--skip)" in out
    # the steps that run are counted: analyze 1/2, report 2/2
    assert "satkern demo 1/2: analyze " in out and "satkern demo 2/2: report from " in out
    assert "satkern demo 2/4" not in out and "satkern demo 4/4" not in out
    assert (tmp_path / "d" / "report.html").exists()
    assert satkern.cli.main(["demo", "--out", str(tmp_path / "e"), "--skip", "nothing"]) == 2
    assert not (tmp_path / "e").exists()

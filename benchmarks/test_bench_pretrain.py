"""Smoke check of bench_pretrain.py (``pytest benchmarks/test_bench_pretrain.py``; not part of `make test`):
two variants on the fixture corpus, a table with one row each, bad options one line."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_pretrain  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "corpus"


def test_quick_run_prints_one_row_per_variant(capsys):
    assert bench_pretrain.main(["--corpus", str(FIXTURE), "--quick", "--no-write", "--batch-seconds", "4",
                                "--threads", "1", "--attention", "sdpa,eager"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 4 | 1 |")]
    assert [r.split("|")[3].strip() for r in rows] == ["sdpa", "eager"]
    assert "1.00x" in rows[0] and "load average" in out


@pytest.mark.parametrize("args, name", [(["--batch-seconds", "0"], "--batch-seconds"),
                                        (["--threads", "x"], "--threads"),
                                        (["--attention", "flash"], "--attention"),
                                        (["--compile", "maybe"], "--compile")])
def test_bad_options_are_one_line(args, name, capsys):
    with pytest.raises(SystemExit) as e:
        bench_pretrain.main(["--corpus", str(FIXTURE)] + args)
    assert name in str(e.value)

"""An --out that is a file (or lies under one): every command that writes a folder refuses it in one line,
``--out: <path> is a file; expected a directory`` (satkern.jobs.files.check_out_dir), before any work,
instead of a raw ``[Errno 17] File exists`` once the model has loaded."""
from pathlib import Path

import pytest

from satkern.cli import main
from satkern.jobs import check_out_dir

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
MODEL = "tiny-mockingjay-base"
JOB = ["--model", MODEL, "--corpus", str(FIXTURE), "--no-progress"]
COMMANDS = {
    "analyze": ["analyze", *JOB, "--max-utterances", "2"],
    "segment": ["segment", *JOB, "--max-utterances", "3", "--tune-on", "1"],
    "rank": ["rank", *JOB, "--by", "G", "--span", "", "--probe-steps", "5"],
    "demo": ["demo", "--model", MODEL, "--max-utterances", "2", "--no-progress"],
    "pretrain": ["pretrain", "--corpus", str(FIXTURE), "--steps", "1", "--no-progress"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("below", [False, True], ids=["the-file", "a-folder-under-it"])
def test_out_that_is_a_file_is_one_line(tmp_path, capsys, command, below):
    f = tmp_path / "results"
    f.write_text("a file the user already has\n")
    out = f / "run" if below else f
    rc = main([*COMMANDS[command], "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.strip().splitlines() == [f"satkern {command}: error: --out: {f} is a file; expected a directory"], err
    assert f.read_text() == "a file the user already has\n"  # left as it was


def test_check_out_dir(tmp_path):
    assert check_out_dir(tmp_path) == tmp_path  # a folder
    assert check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"  # not there yet
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"^--model-dir: .*/f is a file; expected a directory$"):
        check_out_dir(tmp_path / "f" / "x", arg="--model-dir")

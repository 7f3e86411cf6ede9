"""`satkern pretrain` stopped by SIGINT through the command line: the step being taken finishes, a checkpoint of
it is written, one line, exit 130; --resume then ends bit for bit where an uninterrupted run ends."""
from __future__ import annotations

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: signal_child
from signal_child import run_interrupted  # noqa: E402
from test_pretrain import assert_same_training_state  # noqa: E402

from satkern.cli import main as cli_main  # noqa: E402
from satkern.models.s3prl import read_checkpoint  # noqa: E402
from satkern.pretrain import PretrainConfig, pretrain  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
# the tiny run of test_pretrain.py (its _cfg with monitor_every=3), as command-line options
ARGS = ["pretrain", "--corpus", str(FIXTURE), "--layers", "1", "--hidden", "32", "--heads", "2", "--ffn", "32",
        "--downsample", "3", "--n-mels", "40", "--mask-consecutive", "3", "--steps", "8", "--batch-seconds", "6",
        "--save-every", "4", "--lr", "2e-3", "--monitor-every", "3", "--threads", "1", "--no-progress"]


def test_sigint_mid_pretrain_then_resume_equals_uninterrupted(tmp_path, capsys):
    full = pretrain(PretrainConfig(corpus=str(FIXTURE), out=str(tmp_path / "full"), layers=1, hidden=32, heads=2,
                                   ffn=32, downsample=3, n_mels=40, mask_consecutive=3, steps=8, batch_seconds=6.0,
                                   save_every=4, lr=2e-3, monitor_every=3, threads=1, progress=False))
    out = tmp_path / "out"
    # gate 3: the third check for a stop, before step 3, so steps 1 and 2 are taken: between checkpoints (every 4)
    rc, _, err, _ = run_interrupted([*ARGS, "--out", out], tmp_path / "child", gate=3)
    assert rc == 130 and "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if "interrupted" in ln]
    assert lines == ["satkern pretrain: interrupted: 2 of 8 steps kept; resume with --resume"], err
    assert sorted(p.name for p in out.glob("states-*.ckpt")) == ["states-2.ckpt"]  # written by the stop itself
    (out / ".states-3.ckpt.tmp-999").write_bytes(b"torn")  # what a kill inside a checkpoint write leaves
    for name in ("loss.csv", "monitor.csv"):  # and a kill inside a row's write: the start of a step number
        with open(out / name, "a") as f:
            f.write("1")
    assert cli_main([*ARGS, "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    a, b = read_checkpoint(full["checkpoint"]), read_checkpoint(out / "states-8.ckpt")
    assert_same_training_state(a, b)
    assert (tmp_path / "full" / "loss.csv").read_text().splitlines()[1:] != []
    strip = lambda text: [ln.rsplit(",", 1)[0] for ln in text.splitlines()]  # noqa: E731  (elapsed_s differs)
    assert strip((tmp_path / "full" / "loss.csv").read_text()) == strip((out / "loss.csv").read_text())
    assert (tmp_path / "full" / "monitor.csv").read_text() == (out / "monitor.csv").read_text()

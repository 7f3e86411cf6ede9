"""Clean stops (satkern.jobs.interrupt) through the command line: SIGINT mid-run writes a checkpoint, prints one
line and exits 130, and --resume then equals an uninterrupted run (analyze, rank); a second SIGINT stops at once;
SIGTERM exits 143; a half-written checkpoint part is never trusted; progress counts audio seconds and announces
long inputs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: signal_child
from signal_child import run_interrupted  # noqa: E402

from satkern.cli import main as cli_main  # noqa: E402
from satkern.jobs import interrupt  # noqa: E402
from satkern.jobs.interrupt import Interrupted, handle_stop_signals, stop_between  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
MODEL = "tiny-wav2vec2-large"  # layer-normed front end: batching and resuming change nothing
N_UTT = 6
# one utterance per batch (budget 0), no periodic checkpoint before the stop: the stop itself must write it
ANALYZE = ["analyze", "--model", MODEL, "--corpus", str(FIXTURE), "--max-utterances", str(N_UTT),
           "--budget-seconds", "0", "--checkpoint-seconds", "1000", "--per-utterance", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _interrupted_lines(err: str):
    return [ln for ln in err.splitlines() if "interrupted" in ln]


def _assert_clean(rc, err, code=130):
    assert rc == code, f"exit code {rc}, expected {code}:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = _interrupted_lines(err)
    assert len(lines) == 1, f"expected one 'interrupted' line:\n{err}"
    return lines[0]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted analyze run the interrupted ones must equal."""
    out = tmp_path_factory.mktemp("whole") / "out"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli_main([*ANALYZE, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(n)
    return out


def _signal_self(sig):
    """Send ``sig`` to this process and give its Python handler the chance to run (between bytecodes)."""
    os.kill(os.getpid(), sig)
    for _ in range(50):
        time.sleep(0.001)


def _assert_same_outputs(a: Path, b: Path):
    assert (a / "heads.csv").read_bytes() == (b / "heads.csv").read_bytes()
    za, zb = np.load(a / "prm.npz"), np.load(b / "prm.npz")
    assert sorted(za.files) == sorted(zb.files)
    for k in za.files:
        assert np.array_equal(za[k], zb[k], equal_nan=za[k].dtype.kind == "f"), k
    pd.testing.assert_frame_equal(pd.read_parquet(a / "utterances.parquet"), pd.read_parquet(b / "utterances.parquet"),
                                  check_exact=True)


# ------------------------------------------------------------------ analyze
def test_sigint_mid_analyze_then_resume_equals_uninterrupted(tmp_path, whole, capsys):
    out = tmp_path / "out"
    # gate 2: the second check for a stop, i.e. once the first batch (one utterance) has finished
    rc, _, err, _ = run_interrupted([*ANALYZE, "--out", out], tmp_path / "child", gate=2)
    line = _assert_clean(rc, err)
    assert line == f"satkern analyze: interrupted: 1 of {N_UTT} utterances kept; resume with --resume", line
    assert "SIGINT: stopping after the current batch" in err
    assert (out / "checkpoint" / "rank0-of-1.pt").is_file() and not (out / "heads.csv").exists()
    assert cli_main([*ANALYZE, "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    s = json.loads((out / "summary.json").read_text())
    assert s["resumed"] and s["utterances_this_run"] == N_UTT - 1 and s["counts"]["utterances_analyzed"] == N_UTT
    _assert_same_outputs(whole, out)


def test_second_sigint_stops_at_once_without_traceback(tmp_path):
    out = tmp_path / "out"
    # --checkpoint-seconds 0: every finished batch is checkpointed; the gate then holds "the second batch" so
    # that the first signal cannot end it: only the second does
    argv = [*ANALYZE, "--checkpoint-seconds", "0", "--out", out]
    rc, _, err, after = run_interrupted(argv, tmp_path / "child", gate=2, hold=True,
                                        signals=(signal.SIGINT, signal.SIGINT))
    line = _assert_clean(rc, err)
    assert line == ("satkern analyze: interrupted again (SIGINT): stopped at once; 1 of 6 utterances kept in the "
                    "last checkpoint; resume with --resume"), line
    assert after < 10, f"took {after:.1f} s to stop after the second signal"
    left = sorted(p.name for p in (out / "checkpoint").rglob("*") if p.is_file())
    assert left == ["rank0-000000.parquet", "rank0-of-1.pt"], left  # no temporary file left behind


def test_interrupt_before_the_first_batch_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    rc, _, err, _ = run_interrupted([*ANALYZE, "--out", out], tmp_path / "child", gate=1)
    line = _assert_clean(rc, err)
    assert line == "satkern analyze: interrupted before the first batch finished; nothing kept", line
    assert not out.exists()


def test_sigterm_stops_segment_with_143(tmp_path):
    out = tmp_path / "out"
    argv = ["segment", "--model", MODEL, "--corpus", FIXTURE, "--out", out, "--max-utterances", "4", "--tune-on", "2",
            "--features", "attention", "--heads", "0:0", "--no-progress"]
    # segment has no checkpoint: it stops at once, here in its second utterance's features
    rc, _, err, _ = run_interrupted(argv, tmp_path / "child", gate=2, gate_on="progress",
                                    signals=(signal.SIGTERM,))
    line = _assert_clean(rc, err, code=143)
    assert line == ("satkern segment: interrupted (SIGTERM): stopped at once; segment keeps no partial results "
                    "(it has no --resume): run it again"), line
    assert not (out / "summary.json").exists()


def test_sigint_in_a_step_the_demo_runs_stops_the_demo(tmp_path):
    """demo runs segment through satkern.cli.main: the interrupt goes through that inner main to the demo's,
    which prints one line of its own (its steps are not resumable) and exits 130."""
    corpus = tmp_path / "corpus"
    speaker = "TRAIN/DR1/MKAL0"
    shutil.copytree(FIXTURE / speaker, corpus / speaker)
    n = len(list((corpus / speaker).glob("*.WAV")))
    assert n > 6  # the demo's segment step tunes on 6
    argv = ["demo", "--model", "tiny-mockingjay-base", "--corpus", corpus, "--out", tmp_path / "demo",
            "--budget-seconds", "1000", "--maps", "0", "--no-progress"]
    # progress gate 1: analyze's one batch (budget 1000 s); gate 2: segment's first utterance (its D pass)
    rc, out, err, _ = run_interrupted(argv, tmp_path / "child", gate=2, gate_on="progress")
    line = _assert_clean(rc, err)
    assert line == ("satkern demo: interrupted (SIGINT); the demo keeps no partial results: run it again to start "
                    "over"), line
    assert "satkern demo 2/4: segment: satkern segment" in out and "demo 3/4" not in out and "report at" not in out


def test_half_written_part_is_ignored_by_resume(tmp_path, whole):
    """Parts a kill left behind that the checkpoint (the manifest) does not name, and temporary files, are never
    read: resume equals the uninterrupted run."""
    from satkern.analysis import AnalyzeConfig, analyze

    out = tmp_path / "out"
    cfg = dict(model=MODEL, corpus=str(FIXTURE), out=str(out), max_utterances=N_UTT, budget_seconds=0.0,
               per_utterance=True, progress=False)

    class Killed(RuntimeError):
        pass

    def kill_after_two(i, uids):
        if i == 1:
            raise Killed()

    quiet = dict(log=lambda s: None)
    with pytest.raises(Killed):
        analyze(AnalyzeConfig(**cfg, checkpoint_batches=1), on_batch=kill_after_two, **quiet)
    parts = out / "checkpoint" / "parts"
    named = sorted(p.name for p in parts.iterdir())
    assert named == ["rank0-000000.parquet", "rank0-000001.parquet"], named
    good = (parts / named[0]).read_bytes()
    (parts / "rank0-000099.parquet").write_bytes(good[: len(good) // 2])  # torn, and named by no manifest
    (parts / "rank0-000098.parquet").write_bytes(good)  # whole, but named by no manifest: would duplicate rows
    (parts / ".rank0-000002.parquet.tmp-12345").write_bytes(good[:100])  # a write killed before its rename
    (out / "checkpoint" / ".rank0-of-1.pt.tmp-12345").write_bytes(b"torn")
    s = analyze(AnalyzeConfig(**cfg, resume=True), **quiet)
    assert s["resumed"] and s["utterances_this_run"] == N_UTT - 2
    _assert_same_outputs(whole, out)


# ------------------------------------------------------------------ rank
RANK = ["rank", "--model", "tiny-mockingjay-base", "--corpus", str(FIXTURE), "--by", "G", "--step", "8",
        "--random-seeds", "1", "--span", "2", "--tasks", "phone", "--train-split", "TRAIN[:0.5]",
        "--test-split", "TRAIN[0.5:]", "--probe-steps", "5", "--timing-seconds", "1", "--threads", "1",
        "--no-progress"]
TIMING = ["forward_s_per_audio_s", "forward_s_per_audio_s_min", "forward_spread",
          "attention_share"]  # measured, so they differ between two runs


def test_sigint_between_rank_points_keeps_them_and_resume_equals_uninterrupted(tmp_path, capsys):
    full = tmp_path / "full"
    assert cli_main([*RANK, "--out", str(full)]) == 0
    out = tmp_path / "out"
    rc, _, err, _ = run_interrupted([*RANK, "--out", out], tmp_path / "child", gate=1)  # after the first point
    line = _assert_clean(rc, err)
    assert line == "satkern rank: interrupted: 1 of 3 points kept; resume with --resume", line
    assert len(list((out / "points").glob("*.json"))) == 1 and not (out / "curves.csv").exists()
    assert cli_main([*RANK, "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    s = json.loads((out / "summary.json").read_text())
    assert s["points"]["reused_from_disk"] >= 1
    a, b = pd.read_csv(out / "curves.csv"), pd.read_csv(full / "curves.csv")
    pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING))


# ------------------------------------------------------------------ the mechanism, in this process
def test_first_signal_sets_the_flag_second_raises_and_handlers_come_back():
    before = signal.getsignal(signal.SIGINT)
    with stop_between("batch", note="3 kept") as stop:
        assert signal.getsignal(signal.SIGINT) is not before
        _signal_self(signal.SIGINT)
        assert stop.requested == signal.SIGINT and stop
        with pytest.raises(Interrupted) as e:
            _signal_self(signal.SIGTERM)
        assert e.value.exit_code == 143 and e.value.message == "interrupted again (SIGTERM): stopped at once; 3 kept"
    assert signal.getsignal(signal.SIGINT) is before and interrupt._state.requested is None
    assert not interrupt._state.installed and not interrupt._state.sections


def test_a_stop_the_loop_did_not_take_is_raised_when_the_section_ends():
    with pytest.raises(Interrupted) as e:
        with stop_between("step", note="7 of 9 steps kept"):
            _signal_self(signal.SIGTERM)
    assert e.value.exit_code == 143 and e.value.message == "interrupted (SIGTERM): 7 of 9 steps kept"
    with stop_between("step") as stop:  # taken by the loop: nothing more is raised
        _signal_self(signal.SIGINT)
        err = stop.interrupted("interrupted: 2 of 9 steps kept")
    assert err.exit_code == 130 and isinstance(err, KeyboardInterrupt)


def test_outside_a_section_a_signal_raises_at_once_and_nesting_shares_the_handlers():
    with handle_stop_signals("satkern x: ") as outer:
        assert outer
        with handle_stop_signals() as inner:
            assert not inner
        assert interrupt._state.installed  # the inner one did not remove the outer one's handlers
        with pytest.raises(Interrupted) as e:
            _signal_self(signal.SIGINT)
        assert e.value.exit_code == 130 and e.value.message == "interrupted (SIGINT): stopped at once"
    assert not interrupt._state.installed


# ------------------------------------------------------------------ progress
def test_rate_model_and_long_input_line():
    from satkern.jobs.progress import AudioProgress, RateModel

    rm = RateModel()
    assert rm.estimate(5000) == (None, False)
    rm.observe([1000], 1e-3 * 1000 + 1e-6 * 1000 ** 2)  # c1 = 1e-3 s per frame, c2 = 1e-6 s per frame^2
    est, lower = rm.estimate(3000)
    assert lower and est == pytest.approx(3000 * 2e-3)  # one shape measured: a linear rate, a lower bound
    rm.observe([2000], 1e-3 * 2000 + 1e-6 * 2000 ** 2)
    est, lower = rm.estimate(5000)
    assert not lower and est == pytest.approx(1e-3 * 5000 + 1e-6 * 5000 ** 2, rel=1e-9)

    lines = []
    p = AudioProgress("analyze", 100.0, enabled=False, log=lines.append, prefix="satkern analyze: ", long_frames=4096)
    p.before([("/x/a.wav", 95.0, 4749, 1), ("/x/b.wav", 2.0, 99, 1)])
    p.after(97.0)
    p.before([("/x/c.wav", 200.0, 9000, 2)])  # chunked: 4500 frames per chunk, still long
    assert lines[0] == "satkern analyze: long input: a.wav 95.0 s, 4749 frames per layer, no estimate yet"
    assert lines[1].startswith("satkern analyze: long input: c.wav 200.0 s, 9000 frames per layer (in 2 chunks of "
                               "at most 4500), estimated ")
    assert len(lines) == 2 and p.seconds == 97.0 and p.frames == 4749 + 99


def test_analyze_announces_long_inputs_and_counts_audio_seconds(tmp_path, monkeypatch, capsys):
    from satkern.analysis import analyze, AnalyzeConfig
    from satkern.jobs import progress

    monkeypatch.setattr(progress, "LONG_INPUT_FRAMES", 100)  # every fixture clip (~2 s, 50 frames/s) is "long"
    lines = []
    analyze(AnalyzeConfig(model=MODEL, corpus=str(FIXTURE), out=str(tmp_path / "out"), max_utterances=3,
                          budget_seconds=0.0, progress=True), log=lines.append)
    long_lines = [ln for ln in lines if "long input:" in ln]
    assert len(long_lines) == 3, lines
    assert long_lines[0].endswith("no estimate yet") and "estimated" in long_lines[2], long_lines
    bar = capsys.readouterr().err
    assert "s of audio" in bar and "frames" in bar and "x real time" in bar, bar[-2000:]

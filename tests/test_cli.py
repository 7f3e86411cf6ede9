"""The command line: every bad invocation a newcomer makes gets one line naming the problem and the
fix, a non-zero exit and no traceback; ``--version``; help text for every option; a failed run
leaves nothing behind and a finished one leaves no checkpoint folder."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from satkern.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "corpus"
MODEL = "tiny-wav2vec2-large"  # a tiny built-in model: seconds per run


def _analyze(tmp_path, *extra, model=MODEL, corpus=FIXTURE, out=None):
    out = out or tmp_path / "out"
    return ["analyze", "--model", str(model), "--corpus", str(corpus), "--out", str(out), "--max-utterances", "2",
            "--no-progress", *extra]


def _one_line_error(capsys, argv, *needles):
    """Run the CLI in-process; it must return non-zero and print one stderr line holding every needle."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert rc != 0, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and "error:" in lines[0], err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: --device cuda is valid here")


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_device_cuda_without_cuda(tmp_path, capsys, device):
    _one_line_error(capsys, _analyze(tmp_path, "--device", device), "--device", "--device cpu")
    assert not (tmp_path / "out").exists(), "a refused run created its output folder"


def test_device_not_a_device(tmp_path, capsys):
    _one_line_error(capsys, _analyze(tmp_path, "--device", "gpu"), "--device", "'gpu' is not a device", "cuda:N")


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_backend_that_cannot_run_here(tmp_path, capsys, backend):
    if satkern_available(backend):
        pytest.skip(f"backend {backend} runs on this machine")
    line = _one_line_error(capsys, _analyze(tmp_path, "--backend", backend), f"--backend {backend}",
                           "--backend auto")
    assert "needs CUDA tensors" in line  # the reason BackendUnavailable gives
    assert not (tmp_path / "out").exists()


def satkern_available(backend):
    import satkern

    return satkern.availability("cpu").get(backend) == "available"


def test_unknown_backend(tmp_path, capsys):
    _one_line_error(capsys, _analyze(tmp_path, "--backend", "fast"), "--backend", "'fast' is not a backend")


def test_invalid_config_json(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "hubert",\n  oops}\n')
    _one_line_error(capsys, _analyze(tmp_path, model=folder), "config.json is not valid JSON", "line 2")
    assert not (tmp_path / "out").exists()


def test_folder_without_config(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    _one_line_error(capsys, _analyze(tmp_path, model=tmp_path / "model"), "has no config.json")


def test_nonexistent_model_path(tmp_path, capsys):
    line = _one_line_error(capsys, _analyze(tmp_path, model=tmp_path / "no" / "such_model"), "does not exist")
    assert "neither" not in line and "built-in" not in line


def test_hub_id_is_refused_with_the_fix(tmp_path, capsys):
    _one_line_error(capsys, _analyze(tmp_path, model="facebook/hubert-base-ls960"), "satkern never downloads",
                    "download it yourself", "pass the folder")


def test_unknown_builtin_name(tmp_path, capsys):
    _one_line_error(capsys, _analyze(tmp_path, model="hubert"), "not a built-in name", "tiny-hubert-base")


def test_missing_manifest(tmp_path, capsys):
    _one_line_error(capsys, _analyze(tmp_path, corpus=tmp_path / "list.csv"), "file not found")
    _one_line_error(capsys, _analyze(tmp_path, "--layout", "manifest", corpus=tmp_path / "list.tsv"), "file not found")


def test_missing_corpus_folder(tmp_path, capsys):
    _one_line_error(capsys, _analyze(tmp_path, corpus=tmp_path / "nowhere"), "does not exist")


def test_no_readable_utterance(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.wav").write_bytes(b"not audio at all")
    (corpus / "b.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(64)))
    line = _one_line_error(capsys, _analyze(tmp_path, corpus=corpus), "none of its 2 utterances", "unreadable")
    assert "a.wav" in line
    assert not (tmp_path / "out").exists(), "no heads.csv (nor anything else) for a corpus with nothing readable"


def test_only_too_short_clips(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sf.write(str(corpus / "short.wav"), np.random.default_rng(0).standard_normal(1600).astype("float32") * 0.1,
             16000)  # 0.1 s
    _one_line_error(capsys, _analyze(tmp_path, corpus=corpus), "too short", "--min-seconds")
    assert not (tmp_path / "out").exists()
    # with the minimum lowered the clip is analyzed
    assert main(_analyze(tmp_path, "--min-seconds", "0.05", corpus=corpus)) == 0
    assert (tmp_path / "out" / "heads.csv").exists()


def test_failure_at_the_first_batch_leaves_nothing(tmp_path, capsys, monkeypatch):
    """A run that dies before its first batch is accumulated leaves no empty checkpoint/ behind."""
    import satkern.analysis.job as job

    def broken(*a, **k):
        raise ValueError("simulated failure in the first batch")

    monkeypatch.setattr(job.Accumulator, "add", broken)
    _one_line_error(capsys, _analyze(tmp_path), "simulated failure")
    assert not (tmp_path / "out").exists()
    (tmp_path / "kept").mkdir()  # an --out that existed before is kept (empty), with no checkpoint inside
    _one_line_error(capsys, _analyze(tmp_path, out=tmp_path / "kept"), "simulated failure")
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_checkpoint_folder_removed_unless_kept(tmp_path, capsys):
    assert main(_analyze(tmp_path, out=tmp_path / "a")) == 0
    assert (tmp_path / "a" / "heads.csv").exists() and not (tmp_path / "a" / "checkpoint").exists()
    assert main(_analyze(tmp_path, "--keep-checkpoint", out=tmp_path / "b")) == 0
    assert (tmp_path / "b" / "checkpoint" / "rank0-of-1.pt").exists()
    out = capsys.readouterr()
    assert "2 utterances (" in out.err and "30 utterances found" in out.err, out.err


def test_version(capsys):
    import satkern

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"satkern {satkern.__version__}"


def _all_parsers():
    from satkern.commands.demo_op import build_parser as demo_op_parser

    ap, _ = build_parser()
    yield "satkern", ap
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name != "demo-op":  # parsed by satkern.demo_op's own parser, below
                    yield f"satkern {name}", sub
    yield "satkern demo-op", demo_op_parser()


def test_every_option_has_help():
    missing = []
    for prog, parser in _all_parsers():
        assert parser.format_help(), prog  # every help text formats (no stray % placeholders)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not (choice.help or "").strip():
                        missing.append(f"{prog} {choice.dest}")
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help text: {missing}"


def test_a_real_process_prints_one_line_and_exits_nonzero(tmp_path):
    """Through ``python -m satkern`` (the installed entry point runs the same main)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmds = [_analyze(tmp_path, model="facebook/hubert-base-ls960"), ["demo-op", "--backend", "triton"]]
    for argv in cmds:
        r = subprocess.run([sys.executable, "-m", "satkern", *argv], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2, (argv, r.returncode, r.stderr[-2000:])
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]

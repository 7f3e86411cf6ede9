"""`satkern segment` with nothing to tune or score on, through the command line: a corpus of the fixture's
wavs without their alignments, and one whose --alignments folder holds TextGrids that match no audio file.
One line says what is missing; every utterance is segmented with the untuned alpha and beta and gets its
TextGrid; no empty figure, no empty table printed. And --tune-on 0 on an aligned corpus: untuned, all scored."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from satkern.cli import main
from satkern.corpus import load_audio, parse_textgrid
from satkern.segment import boundaries
from satkern.segment.features import logmel_extractor, mfcc_from_logmel
from satkern.segment.job import (NO_ALIGNED, SCORE_COLUMNS, UNTUNED_ALPHA_MULTIPLIER, UNTUNED_BETA,
                                 UNTUNED_SCALE_UTTERANCES)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
SPEAKER = FIXTURE / "TRAIN" / "DR1" / "MKAL0"
MODEL = "tiny-mockingjay-base"
STEMS = ["SX001", "SX002", "SX003", "SX004"]
ARGS = ["--features", "attention,mfcc", "--candidates", "3", "--keep-heads", "2", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture
def unaligned(tmp_path):
    """The fixture's wavs in a plain folder, without their .PHN files, and one file that is not audio."""
    root = tmp_path / "wavs"
    root.mkdir()
    for stem in STEMS:
        shutil.copy(SPEAKER / f"{stem}.WAV", root / f"{stem.lower()}.wav")
    (root / "zz_broken.wav").write_bytes(b"RIFF not really a wave file")
    return root


def _run(capsys, corpus, out, *extra):
    rc = main(["segment", "--model", MODEL, "--corpus", str(corpus), "--out", str(out), *ARGS, *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _check_untuned_run(out: Path, stdout: str, stderr: str):
    text = stdout + stderr
    said = [ln for ln in text.splitlines() if NO_ALIGNED in ln]
    assert len(said) == 1, text  # one line says what is missing ...
    assert "none of the 4 utterances has an alignment" in said[0] and "scoring skipped" in said[0], said
    assert f"TextGrids in {out / 'textgrids'}/" in said[0]
    assert "Empty DataFrame" not in text and "Columns: [" not in text, text  # ... and no raw empty table
    assert "R-value" not in text  # nothing was scored: no "test n/a" lines
    # every readable utterance segmented, TextGrid written; no scores, so no curve and no empty figure
    assert sorted(p.stem for p in (out / "textgrids").glob("*.TextGrid")) == [s.lower() for s in STEMS]
    for name in ("pr_curve.png", "pr_curve.svg", "pr_curve.csv", "example.npz"):
        assert not (out / name).exists(), name
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns) == SCORE_COLUMNS and scores.empty
    s = json.loads((out / "summary.json").read_text())
    assert s["scoring"]["tuned"] is False and s["scoring"]["scored"] is False
    assert s["scoring"]["untuned_because"].startswith(NO_ALIGNED) and s["notes"] == [s["scoring"]["note"]]
    c = s["counts"]
    assert (c["segmented"], c["scored_tune"], c["scored_test"], c["unaligned_segmented"], c["skipped"]) == (4, 0, 0, 4, 1)
    assert len(s["heads"]["kept"]) == 2 and s["heads"]["kept"] == s["heads"]["candidates"][:2]  # the most diagonal
    # the untuned values: beta 1, alpha 1/2 x the median frame distance over the first utterances
    for key, t in s["tuned"].items():
        assert t["beta"] == UNTUNED_BETA
        assert t["alpha"] == pytest.approx(UNTUNED_ALPHA_MULTIPLIER * s["grids"]["alpha_scale"][key], rel=1e-12)
    # the mfcc tier is what the boundary equations give at those values, the scale recomputed here
    waves = {stem: load_audio(str(out.parent / "wavs" / f"{stem.lower()}.wav"), 16000) for stem in STEMS}
    mfcc = {stem: mfcc_from_logmel(logmel_extractor(16000).extract_one(w).to(torch.float64)) for stem, w in waves.items()}
    medians = []
    for stem in STEMS[:UNTUNED_SCALE_UTTERANCES]:
        d = torch.cdist(mfcc[stem], mfcc[stem])
        iu = torch.triu_indices(d.shape[0], d.shape[0], 1)
        medians.append(float(d[iu[0], iu[1]].median()))
    alpha = UNTUNED_ALPHA_MULTIPLIER * float(np.median(medians))
    assert s["tuned"]["mfcc"]["alpha"] == pytest.approx(alpha, rel=1e-6)
    for stem in STEMS:
        tiers = {t.name: [p[0] for p in t.items] for t in parse_textgrid(out / "textgrids" / f"{stem.lower()}.TextGrid")}
        assert set(tiers) == {"mfcc", *(f"attention {h}" for h in s["heads"]["kept"])}  # no "true" tier
        want = boundaries(mfcc[stem], s["tuned"]["mfcc"]["alpha"], UNTUNED_BETA, 0.01).numpy()
        assert len(want) > 0
        np.testing.assert_allclose(tiers["mfcc"], want, atol=1e-12)
    # the skipped file: its reason counted on screen, not only in summary.json
    assert "skipped 1 file: unreadable audio" in stdout and "zz_broken.wav" in stdout
    return said[0]


def test_corpus_without_alignments(tmp_path, capsys, unaligned):
    out = tmp_path / "seg"
    rc, stdout, stderr = _run(capsys, unaligned, out)
    assert rc == 0, stderr
    line = _check_untuned_run(out, stdout, stderr)
    assert "no TextGrid beside any audio file, and no --alignments folder given" in line


def test_alignments_folder_that_matches_nothing(tmp_path, capsys, unaligned):
    grids = tmp_path / "grids"
    grids.mkdir()
    for name in ("other1", "other2"):
        (grids / f"{name}.TextGrid").write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n')
    out = tmp_path / "seg"
    rc, stdout, stderr = _run(capsys, unaligned, out, "--alignments", str(grids))
    assert rc == 0, stderr
    line = _check_untuned_run(out, stdout, stderr)
    assert f"--alignments {grids} holds 2 TextGrids, none named like an audio file" in line


@pytest.mark.parametrize("extra, needle", [(["--alpha-grid", "0.1,0.2"], "--alpha-grid has 2 values"),
                                           (["--beta-grid", "0.5,1,2"], "--beta-grid has 3 values"),
                                           (["--no-textgrids"], "--no-textgrids leaves nothing to write")])
def test_nothing_to_tune_and_a_grid_or_nothing_to_write_is_one_line(tmp_path, capsys, unaligned, extra, needle):
    out = tmp_path / "seg"
    rc, stdout, stderr = _run(capsys, unaligned, out, *extra)
    lines = stderr.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"satkern segment: error: {NO_ALIGNED}: ") and needle in lines[0], lines
    assert not out.exists()  # refused before any work: no empty output folder


def test_one_alpha_and_beta_given(tmp_path, capsys, unaligned):
    out = tmp_path / "seg"
    rc, stdout, stderr = _run(capsys, unaligned, out, "--alpha-grid", "7.5", "--beta-grid", "1.25", "--features", "mfcc")
    assert rc == 0, stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["tuned"] == {"mfcc": {"alpha": 7.5, "beta": 1.25}}
    assert "untuned alpha = 7.5, beta = 1.25; scoring skipped" in stdout
    assert len(list((out / "textgrids").glob("*.TextGrid"))) == 4


def test_tune_on_zero_scores_every_aligned_utterance_untuned(tmp_path, capsys):
    corpus = tmp_path / "corpus" / "TRAIN" / "DR1" / "MKAL0"
    corpus.mkdir(parents=True)
    for stem in STEMS:
        for ext in ("WAV", "PHN"):
            shutil.copy(SPEAKER / f"{stem}.{ext}", corpus / f"{stem}.{ext}")
    out = tmp_path / "seg"
    rc, stdout, stderr = _run(capsys, tmp_path / "corpus", out, "--tune-on", "0")
    assert rc == 0, stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["scoring"]["tuned"] is False and s["scoring"]["scored"] is True
    assert s["counts"]["scored_test"] == 4 and s["counts"]["scored_tune"] == 0
    assert all(t["beta"] == UNTUNED_BETA for t in s["tuned"].values())
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    assert set(scores["split"]) == {"test"} and len(scores) == 3  # two kept heads and mfcc
    for name in ("pr_curve.csv", "pr_curve.png", "pr_curve.svg", "example.npz"):
        assert (out / name).stat().st_size > 0, name
    assert "--tune-on 0: no tune utterances, so alpha and beta are not tuned" in stdout
    assert "scored on all 4 aligned utterances" in stdout and NO_ALIGNED not in stdout + stderr

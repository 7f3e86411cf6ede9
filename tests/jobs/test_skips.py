"""Skipped files counted per kind of reason: the grouping itself, and `satkern analyze` printing one line per
reason at the end of the run (the reasons were only in summary.json)."""
import json
import shutil
from pathlib import Path

import numpy as np

from satkern.cli import main
from satkern.jobs.skips import group_skips, reason_kind, skip_lines

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
SHORT = "too short: {:.3f} s, below the minimum clip length of 0.25 s (--min-seconds)"


def test_reasons_are_counted_by_kind_without_their_paths():
    skipped = [{"utterance": "a", "path": "/c/a.wav", "reason": SHORT.format(0.112)},
               {"utterance": "b", "path": "/c/b.wav", "reason": SHORT.format(0.05)},
               {"utterance": "c", "path": "/c/c.wav", "reason": "/c/c.wav: empty audio (0 samples)"},
               {"utterance": "d", "path": "/c/d.wav", "reason": "/c/d.wav: empty audio (0 samples)"},
               {"utterance": "e", "path": "/c/e.wav", "reason": "/c/e.wav: empty audio (0 samples)"},
               {"utterance": "f", "path": "/c/f.wav", "reason": "audio file missing: /c/f.wav"},
               {"utterance": "g", "path": "/c/g.PHN", "reason": "/c/g.PHN:3: expected 'START END LABEL', got '1 2'"}]
    assert reason_kind(skipped[0]["reason"], "/c/a.wav") == "too short"
    assert reason_kind(skipped[5]["reason"], "/c/f.wav") == "audio file missing"
    groups = group_skips(skipped)
    assert [(g.kind, g.count) for g in groups] == [("empty audio", 3), ("too short", 2), ("audio file missing", 1),
                                                   ("expected 'START END LABEL', got '1 2'", 1)]
    assert skip_lines(skipped) == [
        "skipped 3 files: empty audio (0 samples); e.g. /c/c.wav",
        "skipped 2 files: too short; e.g. /c/a.wav: 0.112 s, below the minimum clip length of 0.25 s (--min-seconds)",
        "skipped 1 file: audio file missing; e.g. /c/f.wav",
        "skipped 1 file: expected 'START END LABEL', got '1 2'; e.g. /c/g.PHN",
    ]
    assert skip_lines([]) == []


def test_analyze_prints_one_line_per_reason(tmp_path, capsys):
    import soundfile as sf

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for stem in ("SX001", "SX002"):
        shutil.copy(FIXTURE / "TRAIN" / "DR1" / "MKAL0" / f"{stem}.WAV", corpus / f"{stem.lower()}.wav")
    noise = np.random.default_rng(0).standard_normal(16000).astype("float32") * 0.1
    for name, n in (("short1", 1600), ("short2", 800), ("short3", 2400)):
        sf.write(str(corpus / f"{name}.wav"), noise[:n], 16000)
    (corpus / "broken.wav").write_bytes(b"RIFF not really a wave file")
    out = tmp_path / "out"
    rc = main(["analyze", "--model", "tiny-mockingjay-base", "--corpus", str(corpus), "--out", str(out),
               "--no-progress"])
    stdout = capsys.readouterr().out
    assert rc == 0
    lines = [ln for ln in stdout.splitlines() if ln.startswith("skipped ")]
    assert lines == [
        f"skipped 3 files: too short; e.g. {corpus / 'short1.wav'}: 0.100 s, below the minimum clip length of 0.25 s "
        f"(--min-seconds)",
        f"skipped 1 file: unreadable audio ({_reason_detail(out, 'broken')}); e.g. {corpus / 'broken.wav'}",
    ], stdout
    assert len(json.loads((out / "summary.json").read_text())["skipped"]) == 4


def _reason_detail(out, stem):
    """The unreadable file's own error text, as summary.json holds it (the audio library words it)."""
    s = json.loads((out / "summary.json").read_text())
    reason = next(x["reason"] for x in s["skipped"] if x["utterance"] == stem)
    detail = reason.split("unreadable audio (", 1)[1][:-1]
    assert detail  # the library's words, e.g. "Error opening '...': Format not recognised."
    return detail

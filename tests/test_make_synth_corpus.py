"""scripts/make_synth_corpus.py on a machine without what it runs: one line naming the missing program or
voice and the apt-get command, exit status 1, nothing written. (The synthesis itself never runs in CI.)"""
import stat
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_synth_corpus.py"
APT = "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite"


def _run(tmp_path, path_dir):
    env = {"PATH": str(path_dir), "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    out = tmp_path / "synth"
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()
    return lines[0]


def _fake(folder: Path, name: str, body: str) -> None:
    p = folder / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)


def test_no_synthesizer_on_path(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    line = _run(tmp_path, empty)
    assert line == f"make_synth_corpus: festival and flite not found on PATH; install the Debian packages: {APT}"


def test_flite_missing(tmp_path):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _fake(bin_, "festival", "exit 0\n")
    line = _run(tmp_path, bin_)
    assert line == f"make_synth_corpus: flite not found on PATH; install the Debian packages: {APT}"


def test_festival_voice_missing(tmp_path):
    """A festival that knows every voice but the HTS one (as festival says it: an unbound voice function)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _fake(bin_, "festival", 'read line < "$2"\nif [ "$line" = "(voice_cmu_us_slt_arctic_hts)" ]; then\n'
                            '  echo "SIOD ERROR: unbound variable : voice_cmu_us_slt_arctic_hts"; exit 255\nfi\nexit 0\n')
    _fake(bin_, "flite", 'echo "Voices available: kal awb_time kal16 awb rms slt"\n')
    line = _run(tmp_path, bin_)
    assert line == ("make_synth_corpus: festival voice cmu_us_slt_arctic_hts not installed; install: apt-get install "
                    "festvox-us-slt-hts")


def test_flite_voice_missing(tmp_path):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _fake(bin_, "festival", "exit 0\n")
    _fake(bin_, "flite", 'echo "Voices available: kal awb_time kal16 awb"\n')
    line = _run(tmp_path, bin_)
    assert line.startswith("make_synth_corpus: flite lacks the voices rms, slt (flite -lv)"), line

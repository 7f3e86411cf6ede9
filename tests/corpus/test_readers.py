"""Corpus readers: each layout, .PHN and TextGrid parsing, phone folding, manifests, audio loading."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from satkern.corpus import (TIMIT39, TIMIT61, AlignmentError, AudioError, collect_labels, discover_corpus,
                            fold_39, length_buckets, load_audio, parse_phn, parse_textgrid, phone_tier,
                            read_alignment, resampled_length)
from satkern.corpus.audio import _read_sphere

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "corpus"

LONG_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 1.5
        intervals: size = 2
        intervals [1]:
            xmin = 0
            xmax = 0.5
            text = ""
        intervals [2]:
            xmin = 0.5
            xmax = 1.5
            text = "say ""hi"" 2"
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 1.5
        intervals: size = 4
        intervals [1]:
            xmin = 0
            xmax = 0.5
            text = ""
        intervals [2]:
            xmin = 0.5
            xmax = 0.75
            text = "S"
        intervals [3]:
            xmin = 0.75
            xmax = 1.2
            text = "EY1"
        intervals [4]:
            xmin = 1.2
            xmax = 1.5
            text = "sil"
'''

SHORT_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

0
1.5
<exists>
2
"TextTier"
"events"
0
1.5
1
0.25
"click"
"IntervalTier"
"phones"
0
1.5
3
0
0.5
""
0.5
1e0
"AH0"
1
1.5
"T"
'''


def _wav(path: Path, seconds: float, rate: int = 16000, channels: int = 1, fmt=None, seed=0):
    rng = np.random.default_rng(seed)
    x = (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x if channels > 1 else x[:, 0], rate, format=fmt, subtype="PCM_16")
    return x


# ------------------------------------------------------------------ phone folding
def test_fold_39_is_lee_hon():
    assert len(TIMIT61) == 61 and len(TIMIT39) == 39
    assert {fold_39(p) for p in TIMIT61} - {None} == set(TIMIT39)
    expected = {"ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "hv": "hh", "ix": "ih", "el": "l", "em": "m",
                "en": "n", "nx": "n", "eng": "ng", "zh": "sh", "ux": "uw", "h#": "sil", "pau": "sil", "epi": "sil",
                "bcl": "sil", "dcl": "sil", "gcl": "sil", "kcl": "sil", "pcl": "sil", "tcl": "sil", "dx": "dx",
                "iy": "iy", "q": None}
    for a, b in expected.items():
        assert fold_39(a) == b, (a, fold_39(a), b)
    # aligner (ARPAbet) labels: case and stress digits go, silences fold to sil, noise is dropped
    assert fold_39("AA1") == "aa" and fold_39("AO2") == "aa" and fold_39("ZH") == "sh"
    assert fold_39("sp") == "sil" and fold_39("spn") is None and fold_39("") is None
    with pytest.raises(KeyError):
        fold_39("xyz")


# ------------------------------------------------------------------ .PHN
def test_parse_phn_and_errors(tmp_path):
    p = tmp_path / "a.PHN"
    p.write_text("0 100 h#\n100 250 sh\n\n250 400 q\n")
    segs = parse_phn(p)
    assert [(s.start, s.end, s.label) for s in segs] == [(0, 100, "h#"), (100, 250, "sh"), (250, 400, "q")]
    # read_alignment: folding drops q, scales sample offsets between rates
    r = read_alignment(p, file_rate=16000, target_rate=8000, label_map=fold_39)
    assert [(s.start, s.end, s.label) for s in r] == [(0, 50, "sil"), (50, 125, "sh")]
    for bad in ("0 100\n", "0 x h#\n", "100 50 h#\n", ""):
        p.write_text(bad)
        with pytest.raises(AlignmentError):
            parse_phn(p)
    with pytest.raises(AlignmentError, match="missing"):
        parse_phn(tmp_path / "nope.PHN")


# ------------------------------------------------------------------ TextGrid
@pytest.mark.parametrize("text,encoding", [(LONG_TEXTGRID, "utf-8"), (SHORT_TEXTGRID, "utf-8"),
                                           (LONG_TEXTGRID, "utf-16")])
def test_parse_textgrid_formats(tmp_path, text, encoding):
    p = tmp_path / "x.TextGrid"
    p.write_text(text, encoding=encoding)
    tiers = parse_textgrid(p)
    tier = phone_tier(tiers)
    assert tier.name == "phones"
    if text is LONG_TEXTGRID:
        assert [t.name for t in tiers] == ["words", "phones"]
        assert tiers[0].items[1].label == 'say "hi" 2'
        assert [(s.start, s.end, s.label) for s in tier.items] == [
            (0, 0.5, ""), (0.5, 0.75, "S"), (0.75, 1.2, "EY1"), (1.2, 1.5, "sil")]
        segs = read_alignment(p, file_rate=1, target_rate=16000, label_map=fold_39)
        assert [(s.start, s.end, s.label) for s in segs] == [(8000, 12000, "s"), (12000, 19200, "ey"),
                                                             (19200, 24000, "sil")]
    else:
        assert tiers[0].kind == "TextTier" and tiers[0].items == [(0.25, "click")]
        assert [(s.start, s.end, s.label) for s in tier.items] == [(0, 0.5, ""), (0.5, 1.0, "AH0"), (1, 1.5, "T")]


def test_textgrid_errors(tmp_path):
    p = tmp_path / "x.TextGrid"
    p.write_text(LONG_TEXTGRID.replace('name = "phones"', 'name = "other"'))
    with pytest.raises(AlignmentError, match="which tier"):
        phone_tier(parse_textgrid(p), path=p)
    assert phone_tier(parse_textgrid(p), "other").name == "other"
    p.write_text(LONG_TEXTGRID[: len(LONG_TEXTGRID) // 2])
    with pytest.raises(AlignmentError, match="ends early"):
        parse_textgrid(p)
    p.write_text("hello")
    with pytest.raises(AlignmentError, match="not a Praat TextGrid"):
        parse_textgrid(p)


# ------------------------------------------------------------------ audio
def test_load_audio_resample_channels_and_sphere(tmp_path):
    x = _wav(tmp_path / "a.wav", 0.5, rate=8000, channels=2)
    y = load_audio(tmp_path / "a.wav", 16000)
    assert y.dtype == torch.float32 and len(y) == resampled_length(4000, 8000, 16000) == 8000
    # stereo is averaged; the resampled signal keeps its energy roughly
    mono = x.mean(1)
    assert abs(float((y ** 2).mean()) / float((mono ** 2).mean()) - 1) < 0.2
    with pytest.raises(AudioError, match="resampling disabled"):
        load_audio(tmp_path / "a.wav", 16000, allow_resample=False)
    _wav(tmp_path / "odd.wav", 0.1, rate=16001)
    with pytest.raises(AudioError, match="cannot be converted"):
        load_audio(tmp_path / "odd.wav", 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError, match="unreadable"):
        load_audio(tmp_path / "bad.wav", 16000)
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav", 16000)
    # NIST SPHERE (TIMIT's .WAV): through libsndfile and through the fallback reader
    ref = _wav(tmp_path / "s.WAV", 0.25, fmt="NIST")[:, 0]
    assert (tmp_path / "s.WAV").read_bytes()[:7] == b"NIST_1A"
    a = load_audio(tmp_path / "s.WAV", 16000).numpy()
    b, rate = _read_sphere(tmp_path / "s.WAV")
    assert rate == 16000
    q = np.round(ref * 32767) / 32768  # 16-bit quantization
    assert np.abs(a - q).max() < 1e-4, np.abs(a - q).max()
    assert np.abs(b[:, 0] - a).max() < 1e-6


# ------------------------------------------------------------------ layouts
def test_fixture_corpus_is_timit():
    c = discover_corpus(FIXTURE)
    assert c.layout == "timit" and not c.skipped
    assert 20 <= len(c.utterances) <= 40
    u = c.utterances[0]
    assert u.alignment.endswith(".PHN") and u.sample_rate == 16000 and u.speaker.startswith("MKAL")
    assert len({u.uid for u in c.utterances}) == len(c.utterances)
    labels = collect_labels(c)
    assert set(labels) <= set(TIMIT61) and "h#" in labels
    assert set(collect_labels(c, label_map=fold_39)) <= set(TIMIT39)
    total = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert total < 3e6, total


def test_timit_tree_sphere_and_missing_alignment(tmp_path):
    root = tmp_path / "timit"
    _wav(root / "TRAIN/DR1/FAKE0/SA1.WAV", 0.3, fmt="NIST")
    (root / "TRAIN/DR1/FAKE0/SA1.PHN").write_text("0 2400 h#\n2400 4800 q\n")
    # Kaggle style: SPHERE .WAV plus RIFF .WAV.wav of the same utterance -> one utterance
    _wav(root / "TRAIN/DR1/FAKE0/SA2.WAV", 0.3, fmt="NIST")
    _wav(root / "TRAIN/DR1/FAKE0/SA2.WAV.wav", 0.3)
    (root / "TRAIN/DR1/FAKE0/SA2.PHN").write_text("0 4800 h#\n")
    _wav(root / "TRAIN/DR1/FAKE0/SX3.WAV", 0.3)  # no .PHN
    c = discover_corpus(root)
    assert c.layout == "timit"
    # an utterance without an alignment stays (its head metrics need no labels), with alignment None
    assert [u.uid for u in c.utterances] == ["TRAIN/DR1/FAKE0/SA1", "TRAIN/DR1/FAKE0/SA2", "TRAIN/DR1/FAKE0/SX3"]
    assert c.utterances[1].audio.endswith("SA2.WAV.wav")
    assert c.utterances[2].alignment is None and c.has_alignments and not c.skipped
    assert collect_labels(c) == ["h#", "q"] and len(c.utterances) == 3
    assert c.utterances[0].num_samples == 4800 and c.utterances[0].speaker == "FAKE0"


def test_librispeech_tree_with_mfa_alignments(tmp_path):
    root = tmp_path / "LibriSpeech" / "dev-clean"
    for utt in ("0000", "0001"):
        _wav(root / "84/121123" / f"84-121123-{utt}.flac", 1.5, fmt="FLAC")
    (root / "84/121123/84-121123.trans.txt").write_text("84-121123-0000 SAY HI\n84-121123-0001 SAY HI\n")
    ali = tmp_path / "mfa" / "84"
    ali.mkdir(parents=True)
    (ali / "84-121123-0000.TextGrid").write_text(LONG_TEXTGRID)
    (ali / "84-121123-0001.TextGrid").write_text(SHORT_TEXTGRID)
    c = discover_corpus(tmp_path / "LibriSpeech", alignments=tmp_path / "mfa")
    assert c.layout == "librispeech" and len(c.utterances) == 2 and not c.skipped
    assert c.utterances[0].speaker == "84" and c.utterances[0].alignment.endswith("84-121123-0000.TextGrid")
    assert collect_labels(c, label_map=fold_39) == ["ah", "ey", "s", "sil", "t"]
    assert collect_labels(c) == ["AH0", "EY1", "S", "T", "sil"]


def test_directory_and_manifest(tmp_path):
    _wav(tmp_path / "d/a/x.wav", 0.2)
    _wav(tmp_path / "d/b/y.flac", 0.2, fmt="FLAC")
    (tmp_path / "d/b/notes.txt").write_text("not audio")
    c = discover_corpus(tmp_path / "d")
    assert c.layout == "directory" and [u.uid for u in c.utterances] == ["a/x", "b/y"]
    assert not c.has_alignments
    (tmp_path / "d/a/x.PHN").write_text("0 3200 h#\n")
    for sep, suffix in ((",", "csv"), ("\t", "tsv")):
        m = tmp_path / f"m.{suffix}"
        m.write_text(sep.join(["path", "alignment", "speaker"]) + "\n"
                     + sep.join(["d/a/x.wav", "d/a/x.PHN", "s1"]) + "\n"
                     + sep.join(["d/b/y.flac", "", "s2"]) + "\n"
                     + sep.join(["d/missing.wav", "", ""]) + "\n")
        c = discover_corpus(m)
        assert c.layout == "manifest"
        assert [(u.uid, u.speaker) for u in c.utterances] == [("d/a/x", "s1"), ("d/b/y", "s2")]
        assert c.utterances[1].alignment is None  # kept: analyzed without phone relations
        reasons = {s["utterance"]: s["reason"] for s in c.skipped}
        assert set(reasons) == {"d/missing"} and "missing" in reasons["d/missing"]
    (tmp_path / "bad.csv").write_text("audio_file\nx.wav\n")
    with pytest.raises(ValueError, match="'path' column"):
        discover_corpus(tmp_path / "bad.csv")


def test_length_buckets_respect_budget():
    rng = np.random.default_rng(1)
    lengths = [int(x) for x in rng.integers(1000, 50000, size=57)] + [200000]
    budget = 120000
    batches = length_buckets(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= budget or len(b) == 1
    # sorted by length: each batch's members are contiguous in length order
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    assert [i for b in batches for i in b] == order

"""Corpus discovery: which utterances there are, where their audio and alignments live.

Layouts (``discover_corpus`` detects them; ``layout=`` forces one):

* ``manifest`` -- a ``.csv`` / ``.tsv`` file with a ``path`` column and optional ``alignment``,
  ``speaker`` and ``id`` columns (relative paths are relative to the manifest's folder);
* ``timit`` -- a tree with ``.PHN`` files beside the audio (``.WAV`` NIST SPHERE or RIFF, also
  ``.WAV.wav``); utterance id = path without extension, speaker = the parent folder;
* ``librispeech`` -- ``speaker/chapter/speaker-chapter-utt.flac`` with ``*.trans.txt``;
  alignments are TextGrids (Montreal Forced Aligner output) beside the audio or in ``alignments=DIR``;
* ``directory`` -- every ``.wav``/``.flac``/``.sph``/``.ogg`` below a folder (recursive), with
  TextGrids beside the audio or in ``alignments=DIR`` when there are any.

Only headers are read here (``soundfile.info``); files whose header cannot be read are listed in
``Corpus.skipped`` with the reason. When only some utterances have alignments, the others stay in
the corpus with ``alignment=None``: their head metrics need no labels (the job leaves them out of
the phoneme relation maps only and counts them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .alignments import AlignmentError, read_alignment
from .audio import AudioError, audio_info

AUDIO_SUFFIXES = (".wav", ".flac", ".sph", ".ogg")
# preference when one utterance has several audio files (Kaggle TIMIT: X.WAV (SPHERE) and X.WAV.wav)
_AUDIO_PREFERENCE = (".wav.wav", ".wav", ".flac", ".sph", ".ogg")
_COLUMN_ALIASES = {
    "path": ("path", "audio", "audio_path", "wav", "file", "filename"),
    "alignment": ("alignment", "alignment_path", "align", "phn", "textgrid"),
    "speaker": ("speaker", "speaker_id", "spk"),
    "id": ("id", "utt_id", "uid", "utterance", "utterance_id"),
}


@dataclass
class Utterance:
    """One utterance: ``num_samples`` and ``sample_rate`` are the audio file's own (from its header)."""

    uid: str
    audio: str
    alignment: Optional[str] = None
    speaker: Optional[str] = None
    num_samples: int = 0
    sample_rate: int = 0

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate if self.sample_rate else 0.0


@dataclass
class Corpus:
    root: str
    layout: str
    utterances: List[Utterance] = field(default_factory=list)
    skipped: List[Dict[str, str]] = field(default_factory=list)  # {"utterance", "path", "reason"}

    @property
    def has_alignments(self) -> bool:
        return any(u.alignment for u in self.utterances)

    def skip(self, uid: str, path: str, reason: str) -> None:
        self.skipped.append({"utterance": uid, "path": str(path), "reason": reason})


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for f in sorted(filenames):
            yield Path(dirpath) / f


def _split_key(p: Path) -> Tuple[str, str]:
    """(path without all suffixes, lowercased full suffix): 'a/SA1.WAV.wav' -> ('a/SA1', '.wav.wav')."""
    name = p.name
    i = name.find(".")
    if i <= 0:
        return str(p), ""
    return str(p.parent / name[:i]), name[i:].lower()


def _is_audio(suffix: str) -> bool:
    return any(suffix.endswith(s) for s in AUDIO_SUFFIXES)


def detect_layout(path) -> str:
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() in (".csv", ".tsv"):
            return "manifest"
        raise ValueError(f"corpus {p}: a file corpus must be a .csv or .tsv manifest")
    if not p.is_dir():
        if p.suffix.lower() in (".csv", ".tsv"):
            raise FileNotFoundError(f"manifest {p}: file not found")
        raise FileNotFoundError(f"corpus {p} does not exist (expected a folder of audio or a .csv/.tsv manifest)")
    for f in _walk(p):
        name = f.name.lower()
        if name.endswith(".trans.txt"):
            return "librispeech"
        if name.endswith(".phn"):
            return "timit"
    return "directory"


def _index_textgrids(root: Optional[Path]) -> Dict[str, str]:
    out = {}
    if root is None:
        return out
    for f in _walk(root):
        if f.suffix.lower() == ".textgrid":
            out.setdefault(f.name[: -len(f.suffix)], str(f))
    return out


def _add(corpus: Corpus, uid: str, audio: Path, alignment: Optional[str], speaker: Optional[str]) -> None:
    try:
        n, rate = audio_info(audio)
    except AudioError as e:
        corpus.skip(uid, audio, str(e))
        return
    corpus.utterances.append(Utterance(uid, str(audio), alignment, speaker, n, rate))


def _from_tree(root: Path, layout: str, alignments: Optional[Path]) -> Corpus:
    corpus = Corpus(str(root), layout)
    groups: Dict[str, Dict[str, Path]] = {}
    for f in _walk(root):
        key, suffix = _split_key(f)
        groups.setdefault(key, {})[suffix] = f
    tg_index = _index_textgrids(alignments)
    for key in sorted(groups):
        files = groups[key]
        audio = next((files[s] for s in _AUDIO_PREFERENCE if s in files), None)
        if audio is None:
            audio = next((f for s, f in sorted(files.items()) if _is_audio(s)), None)
        if audio is None:
            continue
        uid = Path(os.path.relpath(key, root)).as_posix()
        stem = Path(key).name
        align = None
        if layout == "timit":
            align = files.get(".phn")
            align = str(align) if align is not None else None
        else:
            align = files.get(".textgrid")
            align = str(align) if align is not None else tg_index.get(stem)
        if layout == "timit":
            speaker = Path(key).parent.name
        elif layout == "librispeech":
            speaker = stem.split("-")[0]
        else:
            speaker = None
        _add(corpus, uid, audio, align, speaker)
    return corpus


def _from_manifest(path: Path) -> Corpus:
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"manifest {path}: file not found")
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except Exception as e:
        raise ValueError(f"manifest {path}: cannot be read as {'TSV' if sep == chr(9) else 'CSV'}: {e}") from None
    cols = {c.strip().lower(): c for c in df.columns}
    pick = {k: next((cols[a] for a in aliases if a in cols), None) for k, aliases in _COLUMN_ALIASES.items()}
    if pick["path"] is None:
        raise ValueError(f"manifest {path}: needs a 'path' column (got columns {list(df.columns)})")
    corpus = Corpus(str(path), "manifest")
    base = path.parent
    seen = set()
    for i, row in df.iterrows():
        p = row[pick["path"]].strip()
        if not p:
            corpus.skip(f"row {i + 2}", path, "manifest row without an audio path")
            continue
        audio = Path(p) if os.path.isabs(p) else base / p
        uid = row[pick["id"]].strip() if pick["id"] else ""
        if not uid:
            uid = _split_key(Path(p))[0].replace(os.sep, "/")
        if uid in seen:
            raise ValueError(f"manifest {path}: duplicate utterance id {uid!r} (row {i + 2})")
        seen.add(uid)
        align = row[pick["alignment"]].strip() if pick["alignment"] else ""
        align = str(Path(align) if os.path.isabs(align) else base / align) if align else None
        speaker = (row[pick["speaker"]].strip() or None) if pick["speaker"] else None
        _add(corpus, uid, audio, align, speaker)
    return corpus


def discover_corpus(path, *, layout: Optional[str] = None, alignments=None) -> Corpus:
    """Find the utterances of a corpus (see the module docstring for the layouts)."""
    p = Path(path)
    layout = layout or detect_layout(p)
    if layout == "manifest":
        corpus = _from_manifest(p)
    elif layout in ("timit", "librispeech", "directory"):
        if not p.is_dir():
            raise ValueError(f"corpus {p}: layout {layout!r} needs a folder")
        corpus = _from_tree(p, layout, Path(alignments) if alignments else None)
    else:
        raise ValueError(f"unknown corpus layout {layout!r} (manifest, timit, librispeech, directory)")
    return corpus


def collect_labels(corpus: Corpus, *, tier: Optional[str] = None,
                   label_map: Optional[Callable[[str], Optional[str]]] = None) -> List[str]:
    """Sorted label set over every alignment; utterances with a malformed alignment are moved to
    ``corpus.skipped``; utterances without one are kept as they are. (Parses every alignment
    once; they are read again when loading.)"""
    labels = set()
    kept = []
    for u in corpus.utterances:
        if not u.alignment:
            kept.append(u)
            continue
        try:
            segs = read_alignment(u.alignment, file_rate=u.sample_rate or 1, target_rate=u.sample_rate or 1,
                                  tier=tier, label_map=label_map)
        except AlignmentError as e:
            corpus.skip(u.uid, u.alignment, str(e))
            continue
        if not segs:
            corpus.skip(u.uid, u.alignment, "alignment has no labelled segments")
            continue
        labels.update(s.label for s in segs)
        kept.append(u)
    corpus.utterances = kept
    return sorted(labels)

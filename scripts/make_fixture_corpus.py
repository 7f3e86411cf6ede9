#!/usr/bin/env python3
"""Regenerate the fixture corpus in tests/fixtures/corpus/ (TIMIT layout) with Debian's festival.

Needs ``festival`` and the 16 kHz diphone voice (``apt-get install festival festvox-kallpc16k``).
Every sentence is synthesized with the kal diphone voice at a few speaking rates (one rate per
pseudo-speaker); festival's own segment end times (``utt.save.segs``) give exact phone
boundaries, written as TIMIT ``.PHN`` files (sample offsets at 16 kHz) next to 16-bit mono
RIFF ``.WAV`` files, plus ``.TXT`` transcripts::

    tests/fixtures/corpus/TRAIN/DR1/MKAL0/SX001.WAV  .PHN  .TXT
    tests/fixtures/corpus/TEST/DR1/MKAL2/SX021.WAV   ...

Phone symbols: festival's ``radio`` phone set (used by the kal voice) is already TIMIT's
symbol set for most phones; pauses become ``h#`` at the ends and ``pau`` inside an utterance.
Festival has no stop closures, so stops appear as their release symbol alone (``b``, not
``bcl b``). The output is deterministic for a given festival version.

Run: ``python scripts/make_fixture_corpus.py [--out tests/fixtures/corpus]``
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

SAMPLE_RATE = 16000  # festvox-kallpc16k synthesizes at 16 kHz

# Short sentences (about 1-2 s each) so the whole corpus stays well under 3 MB.
SENTENCES = [
    "She had your dark suit.",
    "Greasy wash water.",
    "Don't ask me to carry an oily rag.",
    "The birch canoe slid.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "Yes.",
    "Open the door.",
    "Thank you very much.",
    "What time is it?",
]

# (split, dialect region, speaker, festival Duration_Stretch): three speaking rates
SPEAKERS = [("TRAIN", "DR1", "MKAL0", 1.0), ("TRAIN", "DR2", "MKAL1", 0.85), ("TEST", "DR1", "MKAL2", 1.15)]

# festival radio phone set -> TIMIT symbols (identity unless listed; pauses handled apart)
FESTIVAL_TO_TIMIT = {"hh": "hh", "ax": "ax", "axr": "axr", "el": "el", "em": "em", "en": "en", "nx": "nx", "dx": "dx"}
TIMIT61 = set("""aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f g gcl h# hh hv ih ix
iy jh k kcl l m n ng nx ow oy p pau pcl q r s sh t tcl th uh uw ux v w y z zh""".split())


def _scheme_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize(items, workdir: Path) -> None:
    """items: list of (text, stretch, wav_path, segs_path); one festival run for all."""
    lines = ["(voice_kal_diphone)"]
    for text, stretch, wav_path, segs_path in items:
        lines.append(f"(Parameter.set 'Duration_Stretch {stretch})")
        lines.append(f"(set! utt (SynthText {_scheme_string(text)}))")
        lines.append(f"(utt.save.wave utt {_scheme_string(str(wav_path))} 'riff)")
        lines.append(f"(utt.save.segs utt {_scheme_string(str(segs_path))})")
    script = workdir / "synth.scm"
    script.write_text("\n".join(lines) + "\n")
    subprocess.run(["festival", "--batch", str(script)], check=True, capture_output=True)


def read_segs(path: Path):
    """festival .segs: a '#' header line, then 'END_TIME 100 PHONE' per segment."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3 or line.startswith("#"):
            continue
        out.append((float(parts[0]), parts[2]))
    return out


def to_phn(segs, num_samples: int):
    rows, start = [], 0
    for i, (end_time, phone) in enumerate(segs):
        end = min(int(round(end_time * SAMPLE_RATE)), num_samples)
        if i == len(segs) - 1:
            end = num_samples  # the last segment runs to the end of the audio
        if end <= start:
            continue
        if phone == "pau":
            label = "h#" if i in (0, len(segs) - 1) else "pau"
        else:
            label = FESTIVAL_TO_TIMIT.get(phone, phone)
        if label not in TIMIT61:
            raise ValueError(f"festival phone {phone!r} has no TIMIT symbol; extend FESTIVAL_TO_TIMIT")
        rows.append((start, end, label))
        start = end
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "corpus"))
    ap.add_argument("--per-speaker", type=int, default=10, help="sentences per pseudo-speaker (default 10)")
    args = ap.parse_args(argv)
    if shutil.which("festival") is None:
        print("festival not found: apt-get install festival festvox-kallpc16k", file=sys.stderr)
        return 1
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items, plan = [], []
        for s_idx, (split, dr, spk, stretch) in enumerate(SPEAKERS):
            for j in range(args.per_speaker):
                n = s_idx * args.per_speaker + j
                text = SENTENCES[n % len(SENTENCES)]
                uid = f"SX{n + 1:03d}"
                wav_tmp, segs_tmp = tmp / f"{uid}.wav", tmp / f"{uid}.segs"
                items.append((text, stretch, wav_tmp, segs_tmp))
                plan.append((out / split / dr / spk / uid, text, wav_tmp, segs_tmp))
        synthesize(items, tmp)
        total = 0
        for base, text, wav_tmp, segs_tmp in plan:
            base.parent.mkdir(parents=True, exist_ok=True)
            with wave.open(str(wav_tmp)) as w:
                assert w.getframerate() == SAMPLE_RATE and w.getnchannels() == 1, "expected 16 kHz mono"
                num_samples = w.getnframes()
            shutil.copyfile(wav_tmp, base.with_suffix(".WAV"))
            rows = to_phn(read_segs(segs_tmp), num_samples)
            base.with_suffix(".PHN").write_text("".join(f"{a} {b} {p}\n" for a, b, p in rows))
            base.with_suffix(".TXT").write_text(f"0 {num_samples} {text}\n")
            total += base.with_suffix(".WAV").stat().st_size
    print(f"wrote {len(plan)} utterances to {out} ({total / 1e6:.2f} MB of audio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

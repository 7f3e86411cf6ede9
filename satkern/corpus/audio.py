"""Audio loading (soundfile; a small NIST SPHERE fallback) and resampling to the model's rate."""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Tuple

import numpy as np
import soundfile as sf
import torch

# Polyphase resampling builds a filter of about 20 * max(up, down) taps; past this factor the
# ratio is not a sensible conversion (e.g. 16001 Hz -> 16000 Hz) and the file is rejected.
MAX_RESAMPLE_FACTOR = 4096


class AudioError(ValueError):
    """An audio file that cannot be used (the utterance is skipped with this message)."""


def _sphere_header(path: Path) -> dict:
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head.startswith(b"NIST_1A"):
        raise AudioError(f"{path}: not a NIST SPHERE file")
    size = int(head[8:16].split()[0])
    with open(path, "rb") as f:
        head = f.read(size)
    fields = {"header_size": size}
    for line in head.decode("latin-1").splitlines()[2:]:
        parts = line.split(None, 2)
        if not parts or parts[0] == "end_head":
            break
        if len(parts) == 3:
            key, typ, val = parts
            fields[key] = int(val) if typ == "-i" else (float(val) if typ == "-r" else val.strip())
    return fields


def _read_sphere(path: Path) -> Tuple[np.ndarray, int]:
    """Uncompressed PCM NIST SPHERE (what libsndfile does not read, e.g. odd headers)."""
    h = _sphere_header(path)
    coding = str(h.get("sample_coding", "pcm"))
    if "shorten" in coding or "wavpack" in coding or "ulaw" in coding:
        raise AudioError(f"{path}: SPHERE sample_coding {coding!r} is not supported; convert it with "
                         f"sph2pipe -f wav")
    nbytes = int(h.get("sample_n_bytes", 2))
    if nbytes not in (1, 2, 4):
        raise AudioError(f"{path}: SPHERE sample_n_bytes={nbytes} not supported")
    order = "<" if str(h.get("sample_byte_format", "01")) in ("01", "0123", "1") else ">"
    dt = np.dtype({1: "i1", 2: "i2", 4: "i4"}[nbytes]).newbyteorder(order)
    ch = int(h.get("channel_count", 1))
    raw = np.fromfile(path, dtype=dt, offset=h["header_size"])
    n = int(h.get("sample_count", len(raw) // ch))
    raw = raw[: n * ch].reshape(-1, ch).astype(np.float32) / float(2 ** (8 * nbytes - 1))
    return raw, int(h["sample_rate"])


def audio_info(path) -> Tuple[int, int]:
    """(frames, sample rate) from the header, without reading the samples."""
    path = Path(path)
    try:
        info = sf.info(str(path))
        return int(info.frames), int(info.samplerate)
    except FileNotFoundError:
        raise AudioError(f"audio file missing: {path}") from None
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError for bad headers
        try:
            h = _sphere_header(path)
            return int(h.get("sample_count", 0)), int(h["sample_rate"])
        except Exception:
            raise AudioError(f"{path}: unreadable audio ({e})") from None


def resampled_length(num_samples: int, rate: int, target_rate: int) -> int:
    """Samples after converting ``num_samples`` from ``rate`` to ``target_rate`` (resample_poly's count)."""
    if rate == target_rate:
        return num_samples
    r = Fraction(target_rate, rate)
    return math.ceil(num_samples * r.numerator / r.denominator)


def check_resample(rate: int, target_rate: int, path="") -> None:
    if rate == target_rate:
        return
    if rate <= 0:
        raise AudioError(f"{path}: invalid sample rate {rate}")
    r = Fraction(target_rate, rate)
    if max(r.numerator, r.denominator) > MAX_RESAMPLE_FACTOR:
        raise AudioError(f"{path}: sample rate {rate} Hz cannot be converted to {target_rate} Hz "
                         f"(ratio {r.numerator}/{r.denominator} too fine for polyphase resampling); "
                         f"resample the corpus first")


def resample(x: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly, Kaiser-windowed FIR) of a 1-d signal."""
    if rate == target_rate:
        return x
    check_resample(rate, target_rate)
    try:
        from scipy.signal import resample_poly
    except ImportError:  # pragma: no cover - scipy is in requirements-dev.txt
        raise AudioError(f"resampling {rate} Hz -> {target_rate} Hz needs scipy (pip install scipy)") from None
    r = Fraction(target_rate, rate)
    return resample_poly(x, r.numerator, r.denominator).astype(np.float32)


def load_audio(path, target_rate: int, *, allow_resample: bool = True) -> torch.Tensor:
    """Mono float32 waveform ``[N]`` at ``target_rate`` (channels averaged).

    Raises :class:`AudioError` for an unreadable, empty, or non-convertible file.
    """
    return load_audio_with_info(path, target_rate, allow_resample=allow_resample)[0]


def load_audio_with_info(path, target_rate: int, *, allow_resample: bool = True) -> Tuple[torch.Tensor, int, int]:
    """:func:`load_audio` plus the file's own sample rate and channel count (what was converted)."""
    path = Path(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise AudioError(f"audio file missing: {path}") from None
    except Exception as e:
        try:
            data, rate = _read_sphere(path)
        except AudioError as e2:
            if "not a NIST SPHERE" in str(e2):
                raise AudioError(f"{path}: unreadable audio ({e})") from None
            raise
        except Exception:
            raise AudioError(f"{path}: unreadable audio ({e})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != target_rate:
        if not allow_resample:
            raise AudioError(f"{path}: sample rate {rate} Hz, model needs {target_rate} Hz (resampling disabled)")
        check_resample(rate, target_rate, path)
        x = resample(x, rate, target_rate)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(rate), int(data.shape[1])

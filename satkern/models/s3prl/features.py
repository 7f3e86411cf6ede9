"""Acoustic features of s3prl's Mockingjay / TERA / AudioALBERT, written with torch only.

s3prl extracts features on the fly with torchaudio, which has no CPU build here, so
this module re-implements the two extractors its checkpoints name in their ``audio``
config block:

* the *online preprocessor* (``upstream/baseline/preprocessor.py``; an ``audio`` block
  without a ``kaldi`` key): waveform scaled to ``target_level`` dB, STFT with a periodic
  Hann window (``win_ms``, ``hop_ms``, ``n_fft = 2 (n_freq - 1)``, centered, reflect
  padding), power spectrum, then ``linear`` (the power spectrum), ``mel``
  (torchaudio ``MelScale``: HTK mel, no filter normalization, 0 Hz to Nyquist) or
  ``mfcc`` (torchaudio ``MFCC`` with ``log_mels=True``); optional ``log(x + 1e-10)``,
  ``delta`` orders and per-utterance CMVN, in that order;
* the *Kaldi extracter* (``upstream/baseline/extracter.py``; an ``audio`` block with a
  ``kaldi`` key): ``torchaudio.compliance.kaldi.fbank`` (povey window, pre-emphasis
  0.97, DC removal, FFT size rounded up to a power of two, Kaldi mel banks from
  20 Hz, ``log(max(x, float32 eps))``), then deltas and CMVN.

Every utterance is processed on its own (as s3prl does for a batch of one), so the
features of an utterance never depend on what it is batched with. Shapes are time
first: a feature matrix is ``[T, F]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

# s3prl's OnlinePreprocessor: eps added before the log and to the CMVN denominator.
ONLINE_EPS = 1e-10
# torchaudio.transforms.MFCC(log_mels=True) adds this before its log.
MFCC_LOG_OFFSET = 1e-6
# Kaldi floors mel energies at the float32 machine epsilon before the log.
KALDI_EPS = torch.finfo(torch.float32).eps  # 1.1920928955078125e-07
# s3prl's CMVN (extracter.py and preprocessor.py) divides by std + 1e-10.
CMVN_EPS = 1e-10


# ----------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------
def hz_to_mel_htk(f):
    """HTK mel scale, 2595 log10(1 + f/700)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz_htk(m):
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def hz_to_mel_kaldi(f):
    """Kaldi mel scale, 1127 ln(1 + f/700)."""
    return 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK mel filters ``[n_freqs, n_mels]`` as torchaudio's ``MelScale`` builds them
    (triangles in Hz between mel-spaced corners, no area normalization), float64."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(float(hz_to_mel_htk(f_min)), float(hz_to_mel_htk(f_max)), n_mels + 2,
                           dtype=torch.float64)
    f_pts = mel_to_hz_htk(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]  # [n_mels + 1]
    slopes = f_pts[None, :] - all_freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def kaldi_mel_banks(num_bins: int, padded_window_size: int, sample_freq: float, low_freq: float,
                    high_freq: float) -> torch.Tensor:
    """Kaldi mel filters ``[num_bins, padded_window_size // 2 + 1]`` (triangles in mel space;
    the Nyquist bin gets weight 0 as in Kaldi), float64."""
    num_fft_bins = padded_window_size // 2
    nyquist = 0.5 * sample_freq
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"kaldi fbank: bad frequency range low_freq={low_freq}, high_freq={high_freq} "
                         f"for sample rate {sample_freq}")
    fft_bin_width = sample_freq / padded_window_size
    mel_low = float(hz_to_mel_kaldi(low_freq))
    mel_high = float(hz_to_mel_kaldi(high_freq))
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64)[:, None]
    left = mel_low + b * delta
    center = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    mel = hz_to_mel_kaldi(fft_bin_width * torch.arange(num_fft_bins, dtype=torch.float64))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))


def dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    """Orthonormal DCT-II ``[n_mels, n_mfcc]`` (torchaudio ``create_dct(norm="ortho")``), float64."""
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)[:, None]
    dct = torch.cos(math.pi / n_mels * (n + 0.5) * k)  # [n_mfcc, n_mels]
    dct[0] *= 1.0 / math.sqrt(2.0)
    dct *= math.sqrt(2.0 / n_mels)
    return dct.t()


def compute_deltas(x: torch.Tensor, win_length: int = 5) -> torch.Tensor:
    """Regression deltas along time of ``x [T, F]`` (torchaudio ``compute_deltas``, replicate padding)::

        d[t] = sum_{k=1..N} k (x[t+k] - x[t-k]) / (2 sum_{k=1..N} k^2),  N = (win_length - 1) // 2
    """
    if win_length < 3:
        raise ValueError(f"compute_deltas: win_length must be >= 3; got {win_length}")
    n = (win_length - 1) // 2
    T = x.shape[0]
    if T == 0:
        return x.clone()
    idx = torch.arange(T, device=x.device)
    denom = 2.0 * sum(k * k for k in range(1, n + 1))
    out = torch.zeros_like(x)
    for k in range(1, n + 1):
        fwd = x[torch.clamp(idx + k, max=T - 1)]
        bwd = x[torch.clamp(idx - k, min=0)]
        out = out + k * (fwd - bwd)
    return out / denom


def add_deltas(x: torch.Tensor, order: int, win_length: int = 5) -> torch.Tensor:
    """``[x, d1, d2, ...]`` concatenated along features, each delta of the previous one."""
    feats = [x]
    for _ in range(int(order)):
        feats.append(compute_deltas(feats[-1], win_length))
    return torch.cat(feats, dim=-1)


def cmvn(x: torch.Tensor, eps: float = CMVN_EPS) -> torch.Tensor:
    """Per-utterance mean/variance normalization of ``x [T, F]``: ``(x - mean) / (std + eps)``
    with the unbiased std over time, as s3prl. A one-frame utterance (std undefined) gets std 0."""
    if x.shape[0] == 0:
        return x.clone()
    mean = x.mean(dim=0, keepdim=True)
    if x.shape[0] == 1:
        std = torch.zeros_like(mean)
    else:
        std = x.std(dim=0, keepdim=True)
    return (x - mean) / (std + eps)


def normalize_wav_decibel(wav: torch.Tensor, target_level: float) -> torch.Tensor:
    """Scale ``wav`` so its RMS is ``target_level`` dB (s3prl ``_normalize_wav_decibel``)."""
    rms = wav.pow(2).mean().pow(0.5)
    return wav * ((10.0 ** (target_level / 20.0)) / (rms + 1e-10))


def power_spectrogram(wav: torch.Tensor, n_fft: int, hop_length: int, win_length: int) -> torch.Tensor:
    """``|STFT|^2`` as ``[T, n_fft // 2 + 1]``: periodic Hann window, centered frames, reflect
    padding (torch.stft with torchaudio's defaults); ``T = 1 + len(wav) // hop_length``."""
    if wav.numel() <= n_fft // 2:
        raise ValueError(f"s3prl features: an utterance of {wav.numel()} samples is too short for "
                         f"centered STFT frames with reflect padding (needs more than {n_fft // 2})")
    window = torch.hann_window(win_length, dtype=wav.dtype, device=wav.device)
    spec = torch.stft(wav, n_fft=n_fft, hop_length=hop_length, win_length=win_length, window=window,
                      center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    return (spec.real.pow(2) + spec.imag.pow(2)).t()


def kaldi_fbank(wav: torch.Tensor, *, sample_frequency: float = 16000.0, num_mel_bins: int = 23,
                frame_length: float = 25.0, frame_shift: float = 10.0, use_log_fbank: bool = True,
                use_power: bool = True, dither: float = 0.0, preemphasis_coefficient: float = 0.97,
                remove_dc_offset: bool = True, round_to_power_of_two: bool = True, snip_edges: bool = True,
                window_type: str = "povey", low_freq: float = 20.0, high_freq: float = 0.0,
                blackman_coeff: float = 0.42, use_energy: bool = False, **unsupported) -> torch.Tensor:
    """Kaldi filterbank features ``[T, num_mel_bins]`` of a 1-d waveform, following
    ``torchaudio.compliance.kaldi.fbank`` (same defaults). ``T = 1 + (N - win) // shift``
    (``snip_edges``), 0 when the waveform is shorter than one window."""
    # options that only matter with use_energy / VTLN, accepted at their no-op values
    noop = {"energy_floor": None, "raw_energy": None, "htk_compat": None, "vtln_low": None, "vtln_high": None,
            "min_duration": 0.0, "subtract_mean": False, "vtln_warp": 1.0}
    bad = sorted(k for k, v in unsupported.items()
                 if k not in noop or (noop[k] is not None and v != noop[k]))
    if bad:
        raise NotImplementedError(f"kaldi fbank: options not supported by satkern: {bad}")
    if dither != 0.0:
        raise NotImplementedError("kaldi fbank: dither != 0 (random) is not supported; s3prl's configs use 0")
    if not snip_edges:
        raise NotImplementedError("kaldi fbank: snip_edges=False is not supported")
    if use_energy:
        raise NotImplementedError("kaldi fbank: use_energy=True is not supported")
    window_shift = int(sample_frequency * frame_shift * 0.001)
    window_size = int(sample_frequency * frame_length * 0.001)
    padded = 1 << (window_size - 1).bit_length() if round_to_power_of_two else window_size
    N = wav.numel()
    if N < window_size:
        return wav.new_zeros((0, num_mel_bins))
    num_frames = 1 + (N - window_size) // window_shift
    frames = wav.as_strided((num_frames, window_size), (window_shift * wav.stride(0), wav.stride(0)),
                            wav.storage_offset()).clone()
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis_coefficient != 0.0:
        prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # replicate the first sample
        frames = frames - preemphasis_coefficient * prev
    if window_type == "povey":
        window = torch.hann_window(window_size, periodic=False, dtype=torch.float64).pow(0.85)
    elif window_type == "hanning":
        window = torch.hann_window(window_size, periodic=False, dtype=torch.float64)
    elif window_type == "hamming":
        window = torch.hamming_window(window_size, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64)
    elif window_type == "rectangular":
        window = torch.ones(window_size, dtype=torch.float64)
    elif window_type == "blackman":
        a = 2 * math.pi / (window_size - 1)
        n = torch.arange(window_size, dtype=torch.float64)
        window = blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
    else:
        raise ValueError(f"kaldi fbank: unknown window_type {window_type!r}")
    frames = frames * window.to(device=frames.device, dtype=frames.dtype)
    frames = F.pad(frames, (0, padded - window_size))
    spectrum = torch.fft.rfft(frames).abs()
    if use_power:
        spectrum = spectrum.pow(2.0)
    banks = kaldi_mel_banks(num_mel_bins, padded, sample_frequency, low_freq, high_freq).to(
        device=spectrum.device, dtype=spectrum.dtype)
    mel = spectrum @ banks.t()
    if use_log_fbank:
        mel = torch.clamp(mel, min=KALDI_EPS).log()
    return mel


# ----------------------------------------------------------------------------------
# the extractor a model carries
# ----------------------------------------------------------------------------------
ONLINE_FEAT_TYPES = ("linear", "mel", "mfcc")


@dataclass
class S3prlFeatures:
    """Feature extraction of one s3prl checkpoint (built from its ``audio`` config block).

    ``kind`` is ``"online"`` (OnlinePreprocessor) or ``"kaldi"`` (Kaldi extracter).
    ``hop_length`` is the frame shift in samples; ``dim`` the feature dimension.
    """

    kind: str
    sample_rate: int = 16000
    # online preprocessor
    win_length: int = 400
    hop_length: int = 160
    n_fft: int = 400
    n_mels: int = 40
    n_mfcc: int = 13
    feat_type: str = "mel"
    log: bool = False
    delta: int = 0
    delta_win_length: int = 5
    cmvn: bool = False
    target_level: Optional[float] = None
    # kaldi extracter
    kaldi_type: str = "fbank"
    kaldi_args: Dict = field(default_factory=dict)
    audio_config: Dict = field(default_factory=dict)

    # -- construction ------------------------------------------------------------
    @classmethod
    def from_audio_config(cls, audio: dict) -> "S3prlFeatures":
        """From a checkpoint's ``audio`` block (see the module docstring for the two forms)."""
        if not isinstance(audio, dict):
            raise TypeError(f"s3prl audio config must be a dict; got {type(audio).__name__}")
        if "kaldi" in audio:
            kaldi = dict(audio["kaldi"])
            feat_type = kaldi.get("feat_type", "fbank")
            if feat_type != "fbank":
                raise NotImplementedError(f"s3prl kaldi extracter feat_type {feat_type!r}: satkern implements "
                                          f"'fbank' only")
            args = dict(kaldi.get(feat_type, {}))
            delta = dict(audio.get("delta", {}))
            cm = dict(audio.get("cmvn", {}))
            sample_rate = 16000  # s3prl's extracter.py hard-codes SAMPLE_RATE = 16000
            shift = float(args.get("frame_shift", 10.0))
            length = float(args.get("frame_length", 25.0))
            return cls(kind="kaldi", sample_rate=sample_rate,
                       hop_length=int(sample_rate * shift * 0.001), win_length=int(sample_rate * length * 0.001),
                       n_mels=int(args.get("num_mel_bins", 23)), feat_type="fbank",
                       log=bool(args.get("use_log_fbank", True)),
                       delta=int(delta.get("order", 2)), delta_win_length=int(delta.get("win_length", 5)),
                       cmvn=bool(cm.get("use_cmvn", False)), kaldi_type=feat_type, kaldi_args=args,
                       audio_config=audio)
        inp = audio.get("input")
        if not isinstance(inp, dict):
            raise ValueError("s3prl audio config has neither a 'kaldi' block nor an 'input' feature block")
        feat_type = inp.get("feat_type", "mel")
        if feat_type not in ONLINE_FEAT_TYPES:
            raise NotImplementedError(f"s3prl online feature {feat_type!r}: satkern implements {ONLINE_FEAT_TYPES}")
        sample_rate = int(audio.get("sample_rate", 16000))
        win_ms = float(audio.get("win_ms", 25))
        hop_ms = float(audio.get("hop_ms", 10))
        n_freq = int(audio.get("n_freq", 201))
        target = audio.get("target_level", None)
        return cls(kind="online", sample_rate=sample_rate,
                   win_length=round(win_ms * sample_rate / 1000), hop_length=round(hop_ms * sample_rate / 1000),
                   n_fft=(n_freq - 1) * 2, n_mels=int(audio.get("n_mels", 40)), n_mfcc=int(audio.get("n_mfcc", 13)),
                   feat_type=feat_type, log=bool(inp.get("log", False)), delta=int(inp.get("delta", 0)),
                   cmvn=bool(inp.get("cmvn", False)),
                   target_level=None if target is None else float(target), audio_config=audio)

    # -- sizes --------------------------------------------------------------------
    @property
    def base_dim(self) -> int:
        if self.kind == "kaldi":
            return self.n_mels
        return {"linear": self.n_fft // 2 + 1, "mel": self.n_mels, "mfcc": self.n_mfcc}[self.feat_type]

    @property
    def dim(self) -> int:
        """Feature dimension (static features times 1 + delta orders)."""
        return self.base_dim * (1 + self.delta)

    def num_frames(self, num_samples: int) -> int:
        """Feature frames of an utterance of ``num_samples`` samples."""
        if self.kind == "kaldi":
            return 0 if num_samples < self.win_length else 1 + (num_samples - self.win_length) // self.hop_length
        return 1 + num_samples // self.hop_length

    # -- extraction ---------------------------------------------------------------
    def _static(self, wav: torch.Tensor) -> torch.Tensor:
        if self.kind == "kaldi":
            return kaldi_fbank(wav, sample_frequency=float(self.sample_rate), **self.kaldi_args)
        if self.target_level is not None:
            wav = normalize_wav_decibel(wav, self.target_level)
        if self.feat_type == "mfcc":
            # torchaudio MFCC(melkwargs=win args): its own MelSpectrogram with n_mels=128 (the default)
            power = power_spectrogram(wav, self.n_fft, self.hop_length, self.win_length)
            fb = melscale_fbanks(self.n_fft // 2 + 1, 0.0, float(self.sample_rate // 2), 128, self.sample_rate)
            mel = power @ fb.to(device=power.device, dtype=power.dtype)
            feat = torch.log(mel + MFCC_LOG_OFFSET) @ dct_matrix(self.n_mfcc, 128).to(device=power.device,
                                                                                      dtype=power.dtype)
        else:
            feat = power_spectrogram(wav, self.n_fft, self.hop_length, self.win_length)
            if self.feat_type == "mel":
                fb = melscale_fbanks(self.n_fft // 2 + 1, 0.0, float(self.sample_rate // 2), self.n_mels,
                                     self.sample_rate)
                feat = feat @ fb.to(device=feat.device, dtype=feat.dtype)
        if self.log:
            feat = (feat + ONLINE_EPS).log()
        return feat

    def extract_one(self, wav: torch.Tensor) -> torch.Tensor:
        """Features ``[T, dim]`` of one 1-d waveform (float32 unless given float64)."""
        wav = torch.as_tensor(wav)
        if wav.dim() != 1:
            raise ValueError(f"s3prl features: each waveform must be 1-d; got shape {tuple(wav.shape)}")
        if not wav.is_floating_point():
            raise TypeError(f"s3prl features: waveforms must be float (at {self.sample_rate} Hz); got {wav.dtype}")
        if wav.dtype != torch.float64:
            wav = wav.to(torch.float32)
        feat = self._static(wav)
        if self.delta:
            feat = add_deltas(feat, self.delta, self.delta_win_length)
        if self.cmvn:
            feat = cmvn(feat)
        return feat

    def __call__(self, waveforms: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(feats [B, T, dim] zero-padded, lengths LongTensor [B])`` for a list of 1-d waveforms."""
        if isinstance(waveforms, torch.Tensor) and waveforms.dim() == 1:
            waveforms = [waveforms]
        feats: List[torch.Tensor] = [self.extract_one(w) for w in waveforms]
        if not feats:
            raise ValueError("s3prl features: no waveforms given")
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)
        T = int(lengths.max())
        out = feats[0].new_zeros((len(feats), T, self.dim))
        for i, f in enumerate(feats):
            out[i, : f.shape[0]] = f
        return out, lengths

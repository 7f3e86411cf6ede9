"""s3prl feature extraction (torch only) against independent references.

References: ``transformers.audio_utils`` (numpy: its own framing, windows, FFT and mel
filter banks) for log-mel, linear spectrogram and Kaldi fbank; direct formulas written
here for deltas, CMVN and the dB normalization.

``transformers.audio_utils.spectrogram`` stores the STFT as complex64 even with
``dtype=float64``, so its log features carry float32 rounding (about 1e-7 relative):
float64 features are held to 1e-6 in the log domain against it.
"""
import math

import numpy as np
import pytest
import torch

from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from satkern.models.s3prl.features import (S3prlFeatures, add_deltas, cmvn, compute_deltas, kaldi_fbank,
                                           melscale_fbanks)

SR = 16000
LOG_TOL = 1e-6  # float32 rounding of the reference's complex64 STFT, in nats


def _wav(n, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / SR
    # a chirp plus noise: energy spread over the band, nothing exactly zero
    w = 0.3 * torch.sin(2 * math.pi * (200 + 3000 * t) * t) + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    return w


def _worst(a, b):
    a = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    return float((a - b).abs().max())


def _online(feat_type="mel", log=True, delta=0, cmvn_=False, target_level=-25, n_mels=80):
    return S3prlFeatures.from_audio_config({
        "target_level": target_level, "win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": n_mels, "n_mfcc": 13,
        "input": {"feat_type": feat_type, "channel": 0, "log": log, "delta": delta, "cmvn": cmvn_}})


def _db_normalize_np(w, level):
    rms = np.sqrt(np.mean(w ** 2))
    return w * (10 ** (level / 20)) / (rms + 1e-10)


@pytest.mark.parametrize("n", [16000, 7777])
def test_log_mel_matches_transformers(n):
    wav = _wav(n, seed=n)
    ours = _online("mel").extract_one(wav)  # float64 in, float64 out
    w = _db_normalize_np(wav.numpy(), -25)
    fb = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                         sampling_rate=SR, norm=None, mel_scale="htk")
    ref = spectrogram(w, window_function(400, "hann", periodic=True), frame_length=400, hop_length=160,
                      fft_length=400, power=2.0, center=True, pad_mode="reflect", mel_filters=fb, mel_floor=0.0,
                      dtype=np.float64).T
    ref = np.log(ref + 1e-10)
    assert ours.shape == ref.shape == (1 + n // 160, 80)
    err = _worst(ours, ref)
    assert err < LOG_TOL, f"log-mel worst abs error {err:.3e}"
    # float32 path (the default for float32 waveforms)
    ours32 = _online("mel").extract_one(wav.float())
    err32 = _worst(ours32, ref)
    assert ours32.dtype == torch.float32 and err32 < 2e-3, f"float32 log-mel worst abs error {err32:.3e}"


def test_mel_filters_match_transformers():
    ours = melscale_fbanks(201, 0.0, 8000.0, 80, SR).numpy()
    ref = mel_filter_bank(201, 80, 0.0, 8000.0, SR, norm=None, mel_scale="htk")
    assert _worst(ours, ref) < 1e-12


def test_linear_spectrogram_matches_transformers():
    wav = _wav(12345, seed=3)
    ours = _online("linear", target_level=None).extract_one(wav)
    ref = spectrogram(wav.numpy(), window_function(400, "hann", periodic=True), frame_length=400, hop_length=160,
                      fft_length=400, power=2.0, center=True, pad_mode="reflect", dtype=np.float64).T
    ref = np.log(ref + 1e-10)
    assert ours.shape == ref.shape == (1 + 12345 // 160, 201)
    err = _worst(ours, ref)
    assert err < LOG_TOL, f"log linear spectrogram worst abs error {err:.3e}"


@pytest.mark.parametrize("n", [16000, 4321])
def test_kaldi_fbank_matches_transformers(n):
    wav = _wav(n, seed=n + 1)
    ours = kaldi_fbank(wav, sample_frequency=SR, num_mel_bins=80, frame_length=25.0, frame_shift=10.0,
                       use_log_fbank=True)
    fb = mel_filter_bank(num_frequency_bins=257, num_mel_filters=80, min_frequency=20.0, max_frequency=8000.0,
                         sampling_rate=SR, norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)
    ref = spectrogram(wav.numpy(), window_function(400, "povey", periodic=False), frame_length=400, hop_length=160,
                      fft_length=512, power=2.0, center=False, preemphasis=0.97, mel_filters=fb,
                      log_mel="log", mel_floor=1.192092955078125e-07, remove_dc_offset=True, dtype=np.float64).T
    assert ours.shape == ref.shape == (1 + (n - 400) // 160, 80)
    err = _worst(ours, ref)
    assert err < LOG_TOL, f"kaldi fbank worst abs error {err:.3e}"


def test_kaldi_fbank_short_and_options():
    assert kaldi_fbank(torch.randn(300), num_mel_bins=80).shape == (0, 80)
    with pytest.raises(NotImplementedError, match="dither"):
        kaldi_fbank(torch.randn(1000), dither=1.0)
    with pytest.raises(NotImplementedError, match="snip_edges"):
        kaldi_fbank(torch.randn(1000), snip_edges=False)


def _deltas_direct(x, N):
    """d[t] = sum_k k (x[t+k] - x[t-k]) / (2 sum k^2), edges replicated, written with loops."""
    T, Fd = x.shape
    out = np.zeros_like(x)
    den = 2 * sum(k * k for k in range(1, N + 1))
    for t in range(T):
        acc = np.zeros(Fd)
        for k in range(1, N + 1):
            acc += k * (x[min(t + k, T - 1)] - x[max(t - k, 0)])
        out[t] = acc / den
    return out


@pytest.mark.parametrize("win", [5, 9])
def test_deltas_direct_formula(win):
    g = torch.Generator().manual_seed(win)
    x = torch.randn(37, 6, generator=g, dtype=torch.float64)
    N = (win - 1) // 2
    d1 = _deltas_direct(x.numpy(), N)
    d2 = _deltas_direct(d1, N)
    assert _worst(compute_deltas(x, win), d1) < 1e-12
    full = add_deltas(x, 2, win)
    assert full.shape == (37, 18)
    assert _worst(full, np.concatenate([x.numpy(), d1, d2], axis=1)) < 1e-12


def test_cmvn_direct_formula():
    g = torch.Generator().manual_seed(7)
    x = 3.0 + 2.0 * torch.randn(50, 5, generator=g, dtype=torch.float64)
    xn = x.numpy()
    ref = (xn - xn.mean(0)) / (xn.std(0, ddof=1) + 1e-10)
    y = cmvn(x)
    assert _worst(y, ref) < 1e-12
    assert torch.allclose(y.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.isfinite(cmvn(x[:1])).all()  # one frame: std taken as 0, no NaN


def test_pipeline_order_log_delta_cmvn_and_batching():
    """Full online pipeline (dB normalization, log-mel, deltas, CMVN) against the references
    composed here, and padding of a batch."""
    fx = _online("mel", log=True, delta=2, cmvn_=True)
    assert fx.dim == 240 and fx.hop_length == 160 and fx.num_frames(8000) == 51
    wavs = [_wav(8000, 1), _wav(5000, 2)]
    feats, lengths = fx([w.float() for w in wavs])
    assert feats.shape == (2, 51, 240) and lengths.tolist() == [51, 32]
    assert bool((feats[1, 32:] == 0).all())
    fb = mel_filter_bank(201, 80, 0.0, 8000.0, SR, norm=None, mel_scale="htk")
    for i, w in enumerate(wavs):
        m = spectrogram(_db_normalize_np(w.numpy(), -25), window_function(400, "hann"), frame_length=400,
                        hop_length=160, fft_length=400, power=2.0, mel_filters=fb, mel_floor=0.0, dtype=np.float64).T
        m = np.log(m + 1e-10)
        d1 = _deltas_direct(m, 2)
        d2 = _deltas_direct(d1, 2)
        full = np.concatenate([m, d1, d2], axis=1)
        ref = (full - full.mean(0)) / (full.std(0, ddof=1) + 1e-10)
        L = int(lengths[i])
        err = _worst(feats[i, :L], ref)
        assert err < 5e-3, f"utterance {i}: worst abs error {err:.3e} (float32 pipeline)"


def test_kaldi_config_block_and_mfcc_shape():
    fx = S3prlFeatures.from_audio_config({"kaldi": {"feat_type": "fbank", "fbank": {
        "num_mel_bins": 80, "frame_length": 25.0, "frame_shift": 10.0, "use_log_fbank": True}},
        "delta": {"order": 2, "win_length": 5}, "cmvn": {"use_cmvn": True}})
    assert fx.kind == "kaldi" and fx.dim == 240 and fx.hop_length == 160
    feats, lengths = fx([torch.randn(16000), torch.randn(8000)])
    assert feats.shape == (2, 98, 240) and lengths.tolist() == [98, 48]
    mf = _online("mfcc", log=False)
    assert mf.dim == 13 and mf.extract_one(torch.randn(4000)).shape == (26, 13)

"""Helpers the satkern.patch model tests share (test_hf_patch.py, test_wavlm_patch.py): the backend under
test, the output tolerance, a padded batch of random waveforms and the attention-dropout refusal check."""
import os

import pytest
import torch

import satkern

BACKEND = os.environ.get("SATKERN_TEST_BACKEND", "auto")  # auto: the C++ backend when built, else the reference
RTOL = 1e-5
SAMPLES = (16000, 9000, 5000)  # a padded batch: 49, 27 and 15 frames (SEW: 24, 14, 8)


def batch(seed=1):
    """Random waveforms [len(SAMPLES), max(SAMPLES)], zero past each length, and the 0/1 attention mask."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(SAMPLES), max(SAMPLES), generator=g)
    mask = torch.zeros(len(SAMPLES), max(SAMPLES), dtype=torch.long)
    for i, n in enumerate(SAMPLES):
        mask[i, :n] = 1
    return x * mask, mask


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def assert_close_rel(got, want, what):
    err = rel_err(got, want)
    assert err <= RTOL, f"{what}: worst relative error {err:.3g} > {RTOL}"


def assert_training_dropout_refused(model, x, mask):
    """A patched model in training mode with attention dropout refuses to run; leaves ``model`` in eval mode."""
    model.train()
    with satkern.patch(model, backend=BACKEND):
        with pytest.raises(RuntimeError, match="training mode with attention dropout"):
            model(x, attention_mask=mask)
    model.eval()

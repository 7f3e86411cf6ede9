"""Shared fixtures of the ranking tests: the tiny s3prl model, a checkpoint with a pre-training head,
and probe utterances of the fixture corpus (TIMIT layout, 3 pseudo-speakers)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rank_helpers import FIXTURE, MODEL, write_checkpoint  # noqa: F401


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every ranking test runs with one torch thread (tests/conftest.py)."""
    yield


@pytest.fixture(scope="session")
def speech_model():
    from satkern.models import load_model

    torch.manual_seed(0)
    return load_model(MODEL)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-with-head.ckpt")


@pytest.fixture(scope="session")
def corpus_utterances():
    from satkern.corpus import discover_corpus

    return sorted(discover_corpus(FIXTURE).utterances, key=lambda u: u.uid)


@pytest.fixture(scope="session")
def splits(corpus_utterances):
    """(train, test) ProbeUtterances: the two TRAIN speakers' utterances split 60/40 per speaker."""
    from satkern.rank.job import select_split
    from satkern.rank.probes import load_probe_utterances

    train, _ = load_probe_utterances(select_split(corpus_utterances, "TRAIN[:0.6]"), 16000)
    test, _ = load_probe_utterances(select_split(corpus_utterances, "TRAIN[0.6:]"), 16000)
    return train, test

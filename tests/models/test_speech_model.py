"""The SpeechModel family classes: each says how many layers and heads it has, equal to what
satkern.patch finds in it, without patching (models of several sizes, shared layers included)."""
import pytest
import torch

import transformers  # noqa: F401  (a test dependency: requirements-dev.txt)

import satkern
from satkern.models import HFSpeechModel, SpeechModel, build, load_model, names
from satkern.models import hf as hf_models
from satkern.models.s3prl import S3prlSpeechModel, build_s3prl


def _patched_size(sm):
    with satkern.patch(sm, stats=()) as h:
        return h.num_layers, h.num_heads


@pytest.mark.parametrize("name", [n for n in hf_models.names() if n.startswith("tiny-")])
@pytest.mark.parametrize("layers, heads", [(2, 4), (3, 2)])
def test_hf_layers_and_heads(name, layers, heads):
    sm = HFSpeechModel(build(name, num_hidden_layers=layers, num_attention_heads=heads), name)
    assert sm.family == "hf" and isinstance(sm, SpeechModel)
    assert (sm.num_layers, sm.num_heads) == (layers, heads) == _patched_size(sm)


@pytest.mark.parametrize("name", ["tiny-mockingjay", "tiny-tera", "tiny-audio-albert"])
@pytest.mark.parametrize("layers, heads", [(2, 4), (3, 2)])
def test_s3prl_layers_and_heads(name, layers, heads):
    """AudioALBERT shares one layer's weights across positions: each position counts, as in the patch."""
    torch.manual_seed(0)
    model = build_s3prl(name, num_hidden_layers=layers, num_attention_heads=heads).eval()
    sm = S3prlSpeechModel(model, name, random_weights=True)
    assert sm.family == "s3prl" and isinstance(sm, SpeechModel)
    assert (sm.num_layers, sm.num_heads) == (layers, heads) == _patched_size(sm)


@pytest.mark.parametrize("name", ["tiny-hubert-base", "tiny-sew-tiny", "tiny-tera-base", "sat-mini-m3"])
def test_load_model_gives_the_family_class(name):
    assert name in names()
    sm = load_model(name)
    assert isinstance(sm, S3prlSpeechModel if sm.family == "s3prl" else HFSpeechModel)
    assert sm.describe()["layers"] == sm.num_layers and sm.describe()["heads"] == sm.num_heads
    assert sm.random_weights is (not name.startswith("sat-mini"))


def test_only_s3prl_models_take_a_head_mask_and_chunk():
    hf, s3 = load_model("tiny-hubert-base"), load_model("tiny-mockingjay-base")
    assert not hf.supports_head_mask and s3.supports_head_mask
    assert hf.chunking_record(3) == {} and not hf.chunks_long_inputs and hf.num_chunks(10 ** 6) == 1
    assert s3.chunking_record(0)["s3prl"]["sequence_length"] == 0 and not s3.chunks_long_inputs
    s3.model.sequence_length = s3.model.features.num_frames(16000) // 2 + 1  # feature frames: 1 s runs in 2 chunks
    assert s3.chunks_long_inputs and s3.num_chunks(16000) == 2
    s3.whole_sequence = True
    assert not s3.chunks_long_inputs and s3.num_chunks(16000) == 1 and s3.model.whole_sequence
    assert s3.pretraining_head() is None and hf.pretraining_head() is None  # built-in names: no checkpoint


def test_speech_model_is_an_interface():
    with pytest.raises(TypeError):
        SpeechModel(torch.nn.Linear(1, 1), "x", 16000, 320)  # abstract: a family class is needed

"""The convolutional feature encoder run in pieces (satkern.models.feature_encoder) equals the whole run:
float64 at lengths that straddle piece edges, group-norm and layer-norm front ends, batches; HFSpeechModel
uses it for long inputs with the same outputs as the unchunked model."""
import pytest
import torch

import satkern
from satkern.models import build, load_model
from satkern.models.feature_encoder import ChunkedFeatureEncoder, ConvGeometry, conv_geometry, unsupported_reason
from satkern.models.hf import conv_frames

# group-norm first layer (HuBERT / wav2vec2-base), layer norms in every layer (wav2vec2-large, data2vec),
# SEW's 13-layer stack with stride-1 layers
FAMILIES = ["tiny-hubert-base", "tiny-wav2vec2-large", "tiny-data2vec-audio-base", "tiny-sew-tiny"]
CHUNK = 7  # output frames per piece: short inputs already run in several pieces


def _randomize(encoder, seed):
    """Affine norm parameters away from 1 / 0 (so the group-norm statistics matter per channel)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                m.weight.copy_(1 + 0.5 * torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype))


def test_geometry_of_the_standard_stack():
    model = build("tiny-hubert-base")
    config, g = model.config, conv_geometry(model.feature_extractor)
    assert (g.stride, g.receptive_field) == (320, 400)  # 25 ms windows every 20 ms at 16 kHz
    for n in (0, 399, 400, 719, 720, 12345):
        assert g.frames(n) == conv_frames(config, n), n
    assert ConvGeometry((3, 3), (1, 1)).receptive_field == 5 and ConvGeometry((2, 2), (2, 2)).receptive_field == 4


@pytest.mark.parametrize("name", FAMILIES)
def test_pieces_equal_the_whole_encoder_float64(name):
    torch.manual_seed(0)
    model = build(name).double()
    enc = model.feature_extractor
    _randomize(enc, 1)
    assert unsupported_reason(enc) is None
    chunked = ChunkedFeatureEncoder(enc, chunk_frames=CHUNK)
    S, R = chunked.geometry.stride, chunked.geometry.receptive_field
    # one frame; one sample short of / at / past a piece edge; many pieces with a ragged last one
    lengths = [R, (CHUNK - 1) * S + R - 1, (CHUNK - 1) * S + R, (CHUNK - 1) * S + R + 1,
               (3 * CHUNK - 1) * S + R - 1, (3 * CHUNK - 1) * S + R, 5 * CHUNK * S + 17]
    g = torch.Generator().manual_seed(2)
    for n in lengths:
        x = torch.randn(2, n, generator=g, dtype=torch.float64) + 0.3  # an offset: the means matter
        x[1, n // 2:] = 0.0  # a padded utterance in the batch: normalized over the padded length, as the encoder
        with torch.no_grad():
            want = enc(x)
            got = chunked(x)
        assert got.shape == want.shape, n
        err = float((got - want).abs().max())
        assert err < 1e-10, f"{name} at {n} samples: worst abs error {err:.3e}"
        assert chunked.applies(n) == (want.shape[-1] > CHUNK)


def test_unsupported_encoders_are_named():
    enc = build("tiny-hubert-base").feature_extractor
    enc.conv_layers[1].layer_norm = torch.nn.GroupNorm(16, 16)
    assert "GroupNorm" in unsupported_reason(enc)
    with pytest.raises(ValueError, match="after the first layer"):
        ChunkedFeatureEncoder(enc)
    assert "not a transformers" in unsupported_reason(torch.nn.Conv1d(1, 1, 3))


@pytest.mark.parametrize("name", ["tiny-hubert-base", "tiny-wav2vec2-large"])
def test_speech_model_uses_pieces_for_long_inputs_with_the_same_outputs(name):
    """A batch of a long and a short utterance: outputs and patched metrics equal the unchunked model's;
    the encoder's pieces really ran (counted), and the class forward is back afterwards."""
    torch.manual_seed(0)
    sm = load_model(name)
    sm.model.double()
    _randomize(sm.model.feature_extractor, 3)
    g = torch.Generator().manual_seed(4)
    waves = [torch.randn(320 * 40 + 150, generator=g), torch.randn(320 * 9, generator=g)]
    inputs, frames = sm.prepare(waves)
    inputs["input_values"] = inputs["input_values"].double()
    runs = {}
    calls = []
    first_conv = sm.model.feature_extractor.conv_layers[0].conv
    hook = first_conv.register_forward_hook(lambda m, i, o: calls.append(o.shape[-1]))
    try:
        for chunk_frames in (0, 8):
            sm.feature_encoder_chunk_frames = chunk_frames
            calls.clear()
            with torch.no_grad(), satkern.patch(sm, stats=satkern.STAT_NAMES, backend="reference") as h:
                out = sm(inputs, output_hidden_states=True)
            runs[chunk_frames] = (out, h.metrics, list(calls))
    finally:
        hook.remove()
    assert "forward" not in sm.model.feature_extractor.__dict__
    (whole, m0, calls0), (pieces, m1, calls1) = runs[0], runs[8]
    assert len(calls1) > len(calls0)  # the long utterance ran in pieces (two passes for a group norm)
    assert max(calls1) < max(calls0)
    for a, b in zip(whole.hidden_states, pieces.hidden_states):
        for u, T in enumerate(frames.tolist()):
            err = float((a[u, :T] - b[u, :T]).abs().max())
            assert err < 1e-9, (name, u, err)
    for k in "GVDW":
        assert float((getattr(m0, k) - getattr(m1, k)).abs().max()) < 1e-6, k
    assert "in pieces of 8 frames" in sm.describe()["feature_encoder"]["mode"]
    sm.feature_encoder_chunk_frames = 0
    assert "turned off" in sm.describe()["feature_encoder"]["mode"]


def test_hubert_base_float32_twenty_seconds():
    """The real size (512 channels, group norm), float32, 20 s in pieces of 128 frames (2.56 s):
    within float32 rounding of the whole encoder."""
    from transformers.models.hubert.modeling_hubert import HubertFeatureEncoder

    from satkern.models.hf import config_for

    torch.manual_seed(0)
    enc = HubertFeatureEncoder(config_for("hubert-base")).eval()  # the encoder alone: no 95M-parameter model
    _randomize(enc, 5)
    x = torch.randn(1, 16000 * 20, generator=torch.Generator().manual_seed(6)) * 0.1
    with torch.no_grad():
        want = enc(x)
        got = ChunkedFeatureEncoder(enc, chunk_frames=128)(x)
        want64 = enc.double()(x.double())
    assert got.shape == want.shape == (1, 512, 999)
    err = float((got.double() - want64).abs().max())
    base = float((want.double() - want64).abs().max())  # plain torch's own float32 error
    assert err <= 2 * base + 1e-6, f"pieces {err:.3e} vs the whole encoder's {base:.3e}"

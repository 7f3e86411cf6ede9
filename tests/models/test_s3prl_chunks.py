"""s3prl's ``task.sequence_length``: an input longer than it runs as s3prl's upstream runs it (torch.chunk
pieces, each on its own, outputs concatenated); a padded batch gives what each utterance gives alone;
satkern.patch merges the chunks' statistics into the metrics of the utterance's block-diagonal map;
the corpus job records which mode ran and how many utterances were chunked."""
import json
import math
from pathlib import Path

import pytest
import torch

import satkern
from satkern.analysis import AnalyzeConfig, analyze
from satkern.metrics import head_metrics_from_map
from satkern.models import load_model
from satkern.models.s3prl import build_s3prl, load_s3prl_checkpoint
from satkern.models.s3prl.builtin import BUILTIN_CONFIGS, LOG_MEL_AUDIO

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
SEQUENCE_LENGTH = 7  # feature frames: small, so short test inputs are split into several chunks


def _checkpoint(path, name="tiny-tera", sequence_length=SEQUENCE_LENGTH, seed=0):
    """A checkpoint in s3prl's layout (Transformer state dict + Upstream_Config with a task block),
    with weights drawn so attention is far from uniform."""
    torch.manual_seed(seed)
    model = build_s3prl(name)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("query.weight") or pname.endswith("key.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.8)
    block = dict(BUILTIN_CONFIGS[name]["transformer"])
    states = {"Transformer": model.state_dict(), "Step": 1000,
              "Upstream_Config": {"transformer": block, "audio": LOG_MEL_AUDIO,
                                  "task": {"loss": "L1", "sequence_length": sequence_length}}}
    torch.save(states, path)
    return path


@pytest.fixture(params=["tiny-tera", "tiny-mockingjay"])  # no stacking, and 3-frame stacking
def ckpt(request, tmp_path):
    return _checkpoint(tmp_path / f"{request.param}.ckpt", request.param), request.param


def _feats(n, dim=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, n, dim, generator=g, dtype=torch.float64)


def test_sequence_length_is_read_and_chunks_are_torch_chunk(ckpt):
    path, _ = ckpt
    model = load_s3prl_checkpoint(path)
    assert model.sequence_length == SEQUENCE_LENGTH and model.chunking
    for n in (1, 6, 7, 8, 13, 14, 15, 22, 50):
        want = [c.shape[1] for c in torch.chunk(torch.zeros(1, n), math.ceil(n / SEQUENCE_LENGTH), dim=1)] \
            if n > SEQUENCE_LENGTH else [n]
        assert model.chunk_sizes(n) == want, n
    model.whole_sequence = True
    assert model.chunk_sizes(50) == [50] and not model.chunking


def test_chunked_forward_equals_each_chunk_run_separately(ckpt):
    """What s3prl's upstream does: torch.chunk the features, run every piece alone, concatenate."""
    path, name = ckpt
    model = load_s3prl_checkpoint(path).double()
    alone = load_s3prl_checkpoint(path).double()
    alone.whole_sequence = True
    n = 23  # -> 4 chunks of 6, 6, 6, 5 frames (with 3-frame stacking: 2, 2, 2, 1 model frames)
    x = _feats(n)
    out = model(x, output_hidden_states=True, output_attentions=True)
    pieces = torch.chunk(x, math.ceil(n / SEQUENCE_LENGTH), dim=1)
    assert len(pieces) > 1
    ref = [alone(p, output_hidden_states=True, output_attentions=True) for p in pieces]
    assert int(out.lengths[0]) == sum(int(r.lengths[0]) for r in ref)
    for layer in range(len(out.hidden_states)):
        want = torch.cat([r.hidden_states[layer] for r in ref], dim=1)
        err = float((out.hidden_states[layer] - want).abs().max())
        assert out.hidden_states[layer].shape == want.shape and err < 1e-12, (name, layer, err)
    # the maps are block-diagonal: each chunk's own map, nothing across chunks
    o = 0
    for r in ref:
        t = r.attentions[0].shape[-1]
        for a, b in zip(out.attentions, r.attentions):
            assert float((a[0, :, o:o + t, o:o + t] - b[0]).abs().max()) < 1e-12
            assert float(a[0, :, o:o + t, :o].abs().sum() + a[0, :, o:o + t, o + t:].abs().sum()) == 0.0
        o += t
    # whole-sequence mode runs it at once, which differs
    whole = alone(x).last_hidden_state
    assert whole.shape[1] != out.last_hidden_state.shape[1] or float((whole - out.last_hidden_state).abs().max()) > 1e-3


def test_padded_batch_equals_each_utterance_alone(ckpt):
    path, name = ckpt
    model = load_s3prl_checkpoint(path).double()
    lengths = [23, 5, 15, 8]  # chunked, not chunked, chunked, chunked (just over the limit)
    xs = [_feats(n, seed=i) for i, n in enumerate(lengths)]
    batch = torch.zeros(len(lengths), max(lengths), 80, dtype=torch.float64)
    for i, x in enumerate(xs):
        batch[i, :lengths[i]] = x[0]
    out = model(batch, torch.tensor(lengths), output_hidden_states=True)
    for i, x in enumerate(xs):
        one = model(x, output_hidden_states=True)
        t = int(one.lengths[0])
        assert int(out.lengths[i]) == t, (name, i)
        for a, b in zip(out.hidden_states, one.hidden_states):
            assert float((a[i, :t] - b[0, :t]).abs().max()) < 1e-12, (name, i)


def test_patch_metrics_and_relations_of_chunked_utterances(ckpt):
    """h.metrics of a chunked batch = the definitions applied to each utterance's block-diagonal map."""
    path, name = ckpt
    sm = load_model(str(path))
    waves = [torch.randn(16000 * 3 // 10, generator=torch.Generator().manual_seed(i)) * 0.1 for i in range(2)]
    waves[1] = waves[1][:1200]  # 0.3 s (chunked) and 0.075 s (one chunk)
    inputs, frames = sm.prepare(waves)
    assert [sm.num_chunks(len(w)) for w in waves][0] > 1
    with torch.inference_mode():
        maps = sm.model(**inputs, output_attentions=True).attentions  # the model's own eager maps
    Y = 3
    g = torch.Generator().manual_seed(7)
    W = torch.rand(len(waves), int(frames.max()), Y, generator=g)
    with satkern.patch(sm, stats=satkern.STAT_NAMES, backend="reference") as h:
        h.set_labels(W)
        with torch.inference_mode():
            sm(inputs)
    assert h.lengths.tolist() == frames.tolist()
    m = h.metrics
    assert m.G.shape == (len(waves), sm.model.num_layers, sm.model.num_heads)
    for u, T in enumerate(frames.tolist()):
        A = torch.stack([a[u, :, :T, :T] for a in maps]).double()  # [L, H, T, T]
        ref = head_metrics_from_map(A)  # the batch axis holds the layers here
        for k in "GVDW":
            err = float((getattr(m, k)[u].double() - getattr(ref, k)).abs().max())
            assert err < 2e-5, (name, u, k, err)
    # phoneme relation sums: P'_u = (1/T) W^T A W over the whole (block-diagonal) map, P_U,u likewise
    Pp = torch.zeros(sm.model.num_layers, sm.model.num_heads, Y, Y, dtype=torch.float64)
    Pu = torch.zeros(Y, Y, dtype=torch.float64)
    for u, T in enumerate(frames.tolist()):
        A = torch.stack([a[u, :, :T, :T] for a in maps]).double()
        Wu = W[u, :T].double()
        Pp += torch.einsum("tm,lhtk,kn->lhmn", Wu, A, Wu) / T
        c = Wu.sum(0)
        Pu += c[:, None] * c[None, :] / (T * T)
    assert float((h.prm_counts - Pp).abs().max()) < 2e-5
    assert float((h.prm_base - Pu).abs().max()) < 1e-12 and h.prm_utterances == len(waves)


def test_job_records_the_mode_and_the_chunked_count(tmp_path):
    path = _checkpoint(tmp_path / "tera.ckpt", "tiny-tera", sequence_length=64)
    runs = {}
    for whole in (False, True):
        out = tmp_path / f"out-{whole}"
        s = analyze(AnalyzeConfig(model=str(path), corpus=str(FIXTURE), out=str(out), max_utterances=3,
                                  progress=False, s3prl_whole_sequence=whole, per_utterance=True))
        runs[whole] = s
        on_disk = json.loads((out / "summary.json").read_text())
        assert on_disk["model"]["s3prl"] == s["model"]["s3prl"]
    chunked, whole = runs[False]["model"]["s3prl"], runs[True]["model"]["s3prl"]
    assert chunked["sequence_length"] == 64 and chunked["utterances_chunked"] == 3  # fixture clips: > 0.64 s
    assert "chunks" in chunked["mode"] and whole["utterances_chunked"] == 0 and "whole" in whole["mode"]
    assert runs[False]["counts"]["utterances_in_prm"] == 3
    import pandas as pd

    a = pd.read_csv(tmp_path / "out-False" / "heads.csv")
    b = pd.read_csv(tmp_path / "out-True" / "heads.csv")
    assert a[list("GVDW")].notna().all().all()
    assert float((a["G"] - b["G"]).abs().max()) > 1e-4  # the two modes really differ


def test_whole_sequence_option_is_honoured_for_built_in_names(tmp_path):
    """`--s3prl-whole-sequence` with a shipped name (sat-mini-m3, task.sequence_length 1500 feature
    frames = 15 s): through the command line, a 16 s recording runs in 2 chunks by default and whole
    with the option, and the two head tables differ."""
    import numpy as np
    import soundfile as sf

    from satkern.cli import main as cli_main

    assert load_model("sat-mini-m3", s3prl_whole_sequence=True).whole_sequence is True
    assert load_model("sat-mini-m3").whole_sequence is False
    clips = [sf.read(str(p), dtype="float32")[0] for p in sorted(FIXTURE.rglob("*.WAV"))]
    audio = np.concatenate(clips)[: 16000 * 16]
    assert len(audio) == 16000 * 16  # the fixture corpus holds more than 16 s
    corpus = tmp_path / "long"
    corpus.mkdir()
    sf.write(str(corpus / "long.wav"), audio, 16000)
    runs = {}
    for flag in ([], ["--s3prl-whole-sequence"]):
        out = tmp_path / ("whole" if flag else "chunks")
        assert cli_main(["analyze", "--model", "sat-mini-m3", "--corpus", str(corpus), "--out", str(out),
                         "--no-progress", *flag]) == 0
        runs[bool(flag)] = (json.loads((out / "summary.json").read_text())["model"]["s3prl"],
                            (out / "heads.csv").read_text())
    (chunked, heads_chunked), (whole, heads_whole) = runs[False], runs[True]
    assert chunked["utterances_chunked"] == 1 and "chunks" in chunked["mode"]
    assert whole["utterances_chunked"] == 0 and "--s3prl-whole-sequence" in whole["mode"]
    assert heads_chunked != heads_whole


# ----------------------------------------------------------------------------------
# against s3prl's own upstream path (s3prl is not a dependency: its chunking re-implemented here)
# ----------------------------------------------------------------------------------
def s3prl_upstream_hidden_states(sd, block, feats, sequence_length):
    """``[L+1, B, T', H]``: what s3prl's upstream hands out for features ``feats [B, T, F]``.

    Re-implements ``TransformerBuilder._forward`` of s3prl/s3prl ``s3prl/upstream/mockingjay/builder.py``
    (TERA's expert and builder are Mockingjay's: ``upstream/tera/expert.py`` imports
    ``..mockingjay.expert.UpstreamExpert``), with ``output_hidden_states=True``: an input longer than
    ``max_input_length`` (= ``task.sequence_length``) is cut with ``torch.chunk(x, ceil(T / max), dim=1)``,
    every chunk goes through ``process_input_data`` (its own padding mask from the non-zero frames,
    position encodings ``table[:seq_len]`` from 0) and the model, and the stacked hidden states are
    concatenated along time (``torch.cat(x_, dim=2)``). Each piece runs through ``reference_forward``
    (tests/models/test_s3prl.py: s3prl's ``TransformerModel`` written out in plain torch, with the
    frame stacking of s3prl's older ``process_input_data`` for ``downsample_rate > 1``)."""
    from test_s3prl import reference_forward

    T = feats.shape[1]
    if sequence_length == 0 or T <= sequence_length:
        return torch.stack(reference_forward(sd, block, feats)[2])
    pieces = torch.chunk(feats, chunks=math.ceil(T / sequence_length), dim=1)
    return torch.cat([torch.stack(reference_forward(sd, block, p)[2]) for p in pieces], dim=2)


@pytest.mark.parametrize("name", ["tiny-tera", "tiny-mockingjay"])
def test_hidden_states_equal_s3prl_upstream_for_two_and_a_half_chunks(tmp_path, name):
    """Waveform -> features -> the model, an input of 2.5 x sequence_length feature frames (3 chunks):
    every hidden state equals s3prl's upstream path, through SpeechModel, through satkern.patch, and
    through the layer cache the rank job uses (forward_cached ran the whole input at once before: its
    hidden states differed from the first layer input on, position encodings running on past a chunk)."""
    L = 40
    path = _checkpoint(tmp_path / f"{name}.ckpt", name, sequence_length=L)
    sd = torch.load(path, weights_only=True)["Transformer"]
    block = dict(BUILTIN_CONFIGS[name]["transformer"])
    sm = load_model(str(path))
    sm.model.double()
    wav = torch.randn(160 * 99, generator=torch.Generator().manual_seed(3)) * 0.1  # 1 + 99 = 100 feature frames
    inputs, frames = sm.prepare([wav])
    assert inputs["feats"].shape[1] == 100 == int(2.5 * L) and sm.num_chunks(len(wav)) == 3
    want = s3prl_upstream_hidden_states(sd, block, inputs["feats"], L)
    assert want.shape[2] == int(frames[0])
    with torch.no_grad():
        plain = torch.stack(sm(inputs, output_hidden_states=True).hidden_states)
        with satkern.patch(sm, stats=("entropy",), backend="reference"):
            patched = torch.stack(sm(inputs, output_hidden_states=True).hidden_states)
        cache = {}
        cached = [sm.forward_cached(inputs, frames, first, cache) for first in (1, 0, 1)]  # fill, then reuse
    assert set(cache) == {("chunk", 0), ("chunk", 1), ("chunk", 2)}
    for got, what in [(plain, "forward"), (patched, "patched")] + [(c[None], "forward_cached") for c in cached]:
        ref = want if got.shape[0] > 1 else want[-1:]
        assert got.shape == ref.shape, (name, what)
        err = float((got - ref).abs().max())
        assert err < 1e-10, (name, what, err)
    # running it whole (what forward_cached did) is far from s3prl's upstream
    sm.whole_sequence = True
    with torch.no_grad():
        whole = torch.stack(sm(inputs, output_hidden_states=True).hidden_states)
    if whole.shape == want.shape:
        assert float((whole[0] - want[0]).norm() / want[0].norm()) > 0.05

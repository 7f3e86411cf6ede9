"""s3prl-format models (Mockingjay / TERA / AudioALBERT): checkpoint layout, safe loading,
and the forward against an independent eager implementation.

The checkpoints here are written in s3prl's layout by hand: the ``Transformer`` key list
below mirrors s3prl's module tree (including the pre-LN aliases and the repeated
``share_layer`` module), and the reference forward is plain torch on that state dict,
written from s3prl's ``upstream/mockingjay/model.py`` without using satkern's modules.
"""
import argparse
import copy
import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from satkern.models.s3prl import (S3prlSelfAttention, UntrustedCheckpointError, build_s3prl, load_s3prl_checkpoint,
                                  read_checkpoint)
from satkern.models.s3prl.checkpoint import WarmupLinearSchedule as ScheduleRecord

AUDIO_MEL80 = {"target_level": -25, "win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": 80, "n_mfcc": 13,
               "input": {"feat_type": "mel", "channel": 0, "log": True, "delta": 0, "cmvn": True},
               "target": {"feat_type": "mel", "channel": 1, "log": True, "delta": 0, "cmvn": True}}


# ----------------------------------------------------------------------------------
# s3prl's layout, written out by hand
# ----------------------------------------------------------------------------------
def transformer_state_dict(cfg, input_dim, seed):
    """Random ``Transformer`` state dict with s3prl's keys; shared tensors where s3prl shares modules."""
    g = torch.Generator().manual_seed(seed)
    Hd, I, L, dr = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["downsample_rate"]

    def lin(out_f, in_f, gain=1.0):
        return (gain * torch.randn(out_f, in_f, generator=g) / math.sqrt(in_f),
                0.1 * torch.randn(out_f, generator=g))

    def ln():
        return 1.0 + 0.2 * torch.randn(Hd, generator=g), 0.1 * torch.randn(Hd, generator=g)

    sd = {}

    def put(prefix, wb):
        sd[prefix + ".weight"], sd[prefix + ".bias"] = wb

    put("input_representations.spec_transform", lin(Hd, input_dim * dr))
    put("input_representations.LayerNorm", ln())
    shared = None
    for i in range(L):
        p = f"encoder.layer.{i}."
        if cfg["share_layer"] and shared is not None:
            for k, v in shared.items():
                sd[p + k] = v  # the same tensor under every index, as s3prl's repeated module
            continue
        layer = {}
        for name, wb in (("attention.self.query", lin(Hd, Hd, 2.0)), ("attention.self.key", lin(Hd, Hd, 2.0)),
                         ("attention.self.value", lin(Hd, Hd)), ("attention.output.dense", lin(Hd, Hd)),
                         ("attention.output.LayerNorm", ln()), ("intermediate.dense", lin(I, Hd)),
                         ("output.dense", lin(Hd, I)), ("output.LayerNorm", ln())):
            layer[name + ".weight"], layer[name + ".bias"] = wb
        if cfg["pre_layer_norm"]:
            for wbn in ("weight", "bias"):  # aliases: same tensors under a second name
                layer["attention.LayerNorm." + wbn] = layer["attention.output.LayerNorm." + wbn]
                layer["LayerNorm." + wbn] = layer["output.LayerNorm." + wbn]
        for k, v in layer.items():
            sd[p + k] = v
        shared = layer
    if cfg["pre_layer_norm"]:
        for i in range(L + 1):
            put(f"encoder.LayerNorm.{i}", ln())
    return sd


def spec_head_state_dict(cfg, out_dim, seed):
    g = torch.Generator().manual_seed(seed + 1)
    Hd = cfg["hidden_size"]
    return {"dense.weight": torch.randn(Hd, Hd, generator=g), "dense.bias": torch.zeros(Hd),
            "LayerNorm.weight": torch.ones(Hd), "LayerNorm.bias": torch.zeros(Hd),
            "output.weight": torch.randn(out_dim, Hd, generator=g), "output.bias": torch.zeros(out_dim)}


def transformer_block(**kw):
    block = {"input_dim": -1, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 24, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
             "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
             "share_layer": False, "pre_layer_norm": False}
    block.update(kw)
    return block


class FakeModules:
    """Stand-in modules for the classes old checkpoints pickle (s3prl's ``optimizers`` schedules,
    the old runner's ``utility.timer.Timer``), registered only while saving / trusted loading."""

    def __init__(self, monkeypatch):
        self.mp = monkeypatch
        opt = types.ModuleType("optimizers")

        class WarmupLinearSchedule:
            def __init__(self, warmup=0.07, t_total=-1):
                self.warmup, self.t_total = float(warmup), float(t_total)
                self.warned_for_t_total_at_progress = -1

        WarmupLinearSchedule.__module__ = "optimizers"
        WarmupLinearSchedule.__qualname__ = "WarmupLinearSchedule"
        opt.WarmupLinearSchedule = WarmupLinearSchedule
        utility = types.ModuleType("utility")
        timer = types.ModuleType("utility.timer")

        class Timer:
            def __init__(self):
                self.times = {"train": 1.5}

        Timer.__module__ = "utility.timer"
        Timer.__qualname__ = "Timer"
        timer.Timer = Timer
        utility.timer = timer
        self.modules = {"optimizers": opt, "utility": utility, "utility.timer": timer}
        self.Schedule, self.Timer = WarmupLinearSchedule, Timer

    def install(self):
        for k, v in self.modules.items():
            self.mp.setitem(sys.modules, k, v)

    def uninstall(self):
        for k in self.modules:
            self.mp.delitem(sys.modules, k, raising=False)


def _yaml_bool(v):
    return v.lower() == "true" if isinstance(v, str) else bool(v)


def optimizer_state(fake, n_params):
    sched = fake.Schedule(warmup=0.07, t_total=1000000)
    return {"state": {0: {"step": 10, "exp_avg": torch.randn(3)}},
            "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.01,
                              "schedule": sched, "correct_bias": True, "params": list(range(n_params))}]}


def write_checkpoint(path, fake, block, audio, layout, seed=0, input_dim=80, extra_config=None, gamma_beta=False,
                     zipfile=True):
    """torch.save an s3prl checkpoint dict.

    layout "upstream": current runner (Upstream_Config + Args + Optimizer with a pickled schedule);
    "config": builder-legacy (upstream config under Config, runner config under Runner);
    "settings": the first Mockingjay runner (Settings: {Config, Paras}; 'mockingjay' block).
    """
    cfg = {"hidden_size": block["hidden_size"], "intermediate_size": block["intermediate_size"],
           "num_hidden_layers": block["num_hidden_layers"], "share_layer": _yaml_bool(block.get("share_layer")),
           "pre_layer_norm": _yaml_bool(block.get("pre_layer_norm")),
           "downsample_rate": int(block.get("downsample_rate", 1))}
    sd = transformer_state_dict(cfg, input_dim, seed)
    if gamma_beta:  # TF-style LayerNorm names of the oldest checkpoints
        sd = {(k[:-6] + "gamma" if ("LayerNorm" in k and k.endswith("weight")) else
               k[:-4] + "beta" if ("LayerNorm" in k and k.endswith("bias")) else k): v for k, v in sd.items()}
    upstream = {"transformer": block, "task": {"loss": "L1", "sequence_length": 1500}}
    if audio is not None:
        upstream["audio"] = audio
    if extra_config:
        upstream.update(extra_config)
    fake.install()
    states = {"SpecHead": spec_head_state_dict(cfg, input_dim, seed), "Transformer": sd,
              "Optimizer": optimizer_state(fake, len(sd))}
    args = argparse.Namespace(upstream="mockingjay", expdir="result/pretrain/x", seed=1337, multi_gpu=False)
    if layout == "upstream":
        states.update({"Step": 200000, "Args": args, "Runner": {"runner": {"total_steps": 200000}},
                       "Upstream_Config": upstream})
    elif layout == "config":
        states.update({"Step": 200000, "Args": args, "Runner": {"runner": {"total_steps": 200000}},
                       "Config": upstream})
    elif layout == "settings":
        upstream["mockingjay"] = upstream.pop("transformer")
        states.update({"Global_step": 500000, "Settings": {"Config": upstream, "Paras": args}})
    else:
        raise ValueError(layout)
    torch.save(states, path, _use_new_zipfile_serialization=zipfile)  # zipfile=False: torch < 1.6 files
    fake.uninstall()
    return sd


# ----------------------------------------------------------------------------------
# independent eager reference (s3prl's TransformerModel, plain torch on the state dict)
# ----------------------------------------------------------------------------------
def ref_sinusoid(T, H):
    pos = np.arange(T)[:, None].astype(np.float64)
    j = np.arange(H)[None, :]
    table = pos / np.power(10000, 2 * (j // 2) / H)
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.from_numpy(table.astype(np.float32))


def reference_forward(sd, block, feats, dtype=torch.float64, head_mask=None):
    """Returns (final hidden [B,T',H], per-layer maps, hidden states, lengths) as s3prl computes them."""
    P = {k: v.to(dtype) for k, v in sd.items()}
    H, L, nh = block["hidden_size"], block["num_hidden_layers"], block["num_attention_heads"]
    dr = int(block.get("downsample_rate", 1))
    eps = float(block["layer_norm_eps"])
    pre = _yaml_bool(block.get("pre_layer_norm"))
    d = H // nh
    x = feats.to(dtype)
    B, T, Fd = x.shape
    left = T % dr
    if left:
        x = x[:, :-left]
    x = x.reshape(B, (T - left) // dr, Fd * dr)
    Tm = x.shape[1]
    spec_len = (x.sum(dim=-1) != 0).long().sum(dim=-1)  # s3prl: non-zero stacked frames
    attn_mask = torch.ones(B, Tm, dtype=dtype)
    for b in range(B):
        attn_mask[b, spec_len[b]:] = 0
    ext = ((1.0 - attn_mask) * -10000.0)[:, None, None, :]

    def lin(h, name):
        return h @ P[name + ".weight"].t() + P[name + ".bias"]

    def ln(h, name):
        return F.layer_norm(h, (H,), P[name + ".weight"], P[name + ".bias"], eps)

    def heads(h):
        return h.view(B, Tm, nh, d).transpose(1, 2)

    h = ln(lin(x, "input_representations.spec_transform") + ref_sinusoid(Tm, H).to(dtype),
           "input_representations.LayerNorm")
    maps, hidden = [], []
    for i in range(L):
        p = f"encoder.layer.{i}."
        hidden.append(ln(h, f"encoder.LayerNorm.{i}") if pre else h)
        a_in = ln(h, p + "attention.LayerNorm") if pre else h
        q, k, v = (heads(lin(a_in, p + "attention.self." + n)) for n in ("query", "key", "value"))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + ext, dim=-1)
        if head_mask is not None:
            probs = probs * head_mask[i].to(dtype)[None, :, None, None]
        maps.append(probs)
        ctx = (probs @ v).transpose(1, 2).reshape(B, Tm, H)
        a_out = lin(ctx, p + "attention.output.dense") + h
        if not pre:
            a_out = ln(a_out, p + "attention.output.LayerNorm")
        f_in = ln(a_out, p + "LayerNorm") if pre else a_out
        z = lin(f_in, p + "intermediate.dense")
        z = z * 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
        out = lin(z, p + "output.dense") + a_out
        if not pre:
            out = ln(out, p + "output.LayerNorm")
        h = out
    final = ln(h, f"encoder.LayerNorm.{L}") if pre else h
    hidden.append(final)
    return final, maps, hidden, spec_len


def padded_feats(lengths, dim, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    x = torch.zeros(len(lengths), T, dim, dtype=dtype)
    for b, n in enumerate(lengths):
        x[b, :n] = torch.randn(n, dim, generator=g, dtype=dtype)
    return x, torch.tensor(lengths)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture
def fake(monkeypatch):
    return FakeModules(monkeypatch)


VARIANTS = {
    "post-ln": dict(),
    "pre-ln": dict(pre_layer_norm=True),
    "albert-share": dict(share_layer=True, num_hidden_layers=3),
    "stack3": dict(downsample_rate=3),
    "pre-ln-share-stack2": dict(pre_layer_norm=True, share_layer=True, downsample_rate=2),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("layout", ["upstream", "config", "settings"])
def test_checkpoint_forward_matches_reference(tmp_path, fake, variant, layout):
    block = transformer_block(**VARIANTS[variant])
    path = tmp_path / "states-200000.ckpt"
    sd = write_checkpoint(path, fake, block, AUDIO_MEL80, layout, seed=len(variant) + len(layout))
    assert "optimizers" not in sys.modules
    model = load_s3prl_checkpoint(path)  # safe: weights_only with the allow-list
    assert not model.training
    assert set(model.state_dict()) == set(sd)  # strict: every s3prl key, nothing else
    assert model.config.downsample_rate == block.get("downsample_rate", 1)
    assert model.frame_stride == 160 * block.get("downsample_rate", 1) and model.sample_rate == 16000
    if block["share_layer"]:  # one set of weights, a distinct module per layer
        assert model.encoder.layer[0] is not model.encoder.layer[-1]
        for (n, a), b in zip(model.encoder.layer[0].named_parameters(), model.encoder.layer[-1].parameters()):
            assert a is b, n
    lengths = [29, 23, 17]  # 29 % 3 != 0 and 23 % 2 != 0: stacking drops / pads partial frames
    feats, lens = padded_feats(lengths, 80, seed=5)

    # float64: the model and the reference agree to rounding
    model64 = load_s3prl_checkpoint(path).double()
    out = model64(feats.double(), lens, output_attentions=True, output_hidden_states=True)
    ref, ref_maps, ref_hidden, ref_len = reference_forward(sd, block, feats.double())
    assert out.lengths.tolist() == ref_len.tolist()
    err = float((out.last_hidden_state - ref).abs().max())
    assert err < 1e-10, f"{variant}/{layout}: float64 worst abs error {err:.3e}"
    for layer, (a, b) in enumerate(zip(out.attentions, ref_maps)):
        e = float((a - b).abs().max())
        assert e < 1e-12, f"layer {layer} map worst abs error {e:.3e}"
    assert len(out.hidden_states) == block["num_hidden_layers"] + 1
    for a, b in zip(out.hidden_states, ref_hidden):
        assert float((a - b).abs().max()) < 1e-10

    # float32 (as loaded): at most 2x the error of the plain-torch reference run in float32
    out32 = model(feats, lens).last_hidden_state
    ref32 = reference_forward(sd, block, feats, dtype=torch.float32)[0]
    err32 = float((out32.double() - ref).abs().max())
    base32 = float((ref32.double() - ref).abs().max())
    assert err32 <= 2 * base32 + 1e-6, f"{variant}/{layout}: float32 error {err32:.3e} vs torch's {base32:.3e}"


def test_legacy_gamma_beta_names_and_string_options(tmp_path, fake):
    block = transformer_block(downsample_rate=3, layer_norm_eps="1e-12", share_layer="False",
                              prune_headids="None", mask_consecutive=3)
    sd = write_checkpoint(tmp_path / "m.ckpt", fake, block, None, "settings", gamma_beta=True, input_dim=40)
    model = load_s3prl_checkpoint(tmp_path / "m.ckpt")
    assert model.features is None and model.config.input_dim == 40  # pre-extracted features
    sd = {k.replace("gamma", "weight").replace("beta", "bias"): v for k, v in sd.items()}
    feats, lens = padded_feats([30, 12], 40, seed=2)
    out = model.double()(feats.double(), lens)
    ref, _, _, _ = reference_forward(sd, dict(block, layer_norm_eps=1e-12), feats.double())
    assert float((out.last_hidden_state - ref).abs().max()) < 1e-10
    with pytest.raises(RuntimeError, match="pre-extracted"):
        model.extract_features([torch.randn(1600)])
    # an audio block supplied at load time (s3prl's on_the_fly_config)
    audio40 = dict(AUDIO_MEL80, n_mels=40)
    m2 = load_s3prl_checkpoint(tmp_path / "m.ckpt", audio_config=audio40)
    f, n = m2.extract_features([torch.randn(3200)])
    assert f.shape == (1, 21, 40) and m2.frame_stride == 480 and m2(f, n).lengths.tolist() == [7]
    with pytest.raises(ValueError, match="80-dim features"):
        load_s3prl_checkpoint(tmp_path / "m.ckpt", audio_config=AUDIO_MEL80)


def test_pre_zipfile_serialization(tmp_path, fake):
    """Checkpoints saved by torch < 1.6 (the 2020 s3prl releases could be): same safety rules."""
    block = transformer_block(downsample_rate=2)
    sd = write_checkpoint(tmp_path / "old.ckpt", fake, block, AUDIO_MEL80, "config", zipfile=False)
    model = load_s3prl_checkpoint(tmp_path / "old.ckpt").double()
    feats, lens = padded_feats([15, 8], 80, seed=4)
    ref = reference_forward(sd, block, feats.double())[0]
    assert float((model(feats.double(), lens).last_hidden_state - ref).abs().max()) < 1e-10
    fake.install()
    timer = fake.Timer()
    fake.uninstall()
    write_checkpoint(tmp_path / "old2.ckpt", fake, block, AUDIO_MEL80, "config", zipfile=False,
                     extra_config={"timer": timer})
    with pytest.raises(UntrustedCheckpointError, match="utility.timer.Timer"):
        load_s3prl_checkpoint(tmp_path / "old2.ckpt")


def test_pickled_objects_are_inert_records(tmp_path, fake):
    write_checkpoint(tmp_path / "c.ckpt", fake, transformer_block(), AUDIO_MEL80, "upstream")
    states = read_checkpoint(tmp_path / "c.ckpt")
    sched = states["Optimizer"]["param_groups"][0]["schedule"]
    assert type(sched) is ScheduleRecord  # satkern's stand-in, not s3prl code
    assert sched.warmup == 0.07 and sched.t_total == 1000000.0
    assert isinstance(states["Args"], argparse.Namespace) and states["Args"].seed == 1337
    assert "optimizers" not in sys.modules


def test_unknown_class_is_refused_and_trust_loads(tmp_path, fake):
    path = tmp_path / "old.ckpt"
    fake.install()
    timer = fake.Timer()
    fake.uninstall()
    write_checkpoint(path, fake, transformer_block(), AUDIO_MEL80, "settings", extra_config={"timer": timer})
    with pytest.raises(UntrustedCheckpointError) as info:
        load_s3prl_checkpoint(path)
    msg = str(info.value)
    assert "utility.timer.Timer" in msg and "trust=True" in msg, msg
    assert info.value.names == ["utility.timer.Timer"]
    # the user vouches for the file (and has the class importable): full pickle
    fake.install()
    model = load_s3prl_checkpoint(path, trust=True)
    states = read_checkpoint(path, trust=True)
    assert isinstance(states["Settings"]["Config"]["timer"], fake.Timer)
    # schedules still map to the inert stand-ins under trust=True
    assert type(states["Optimizer"]["param_groups"][0]["schedule"]) is ScheduleRecord
    feats, lens = padded_feats([9, 5], 80, seed=1)
    assert torch.isfinite(model(feats, lens).last_hidden_state).all()


_CALLED = []


def _side_effect(x):  # what a malicious pickle would run
    _CALLED.append(x)
    return x


class _Evil:
    def __reduce__(self):
        return (_side_effect, ("ran",))


def test_code_in_pickle_never_runs_without_trust(tmp_path, fake):
    path = tmp_path / "evil.ckpt"
    write_checkpoint(path, fake, transformer_block(), AUDIO_MEL80, "upstream")
    fake.install()
    states = torch.load(path, weights_only=False)  # test-side only: add a reduce payload
    states["Payload"] = _Evil()
    torch.save(states, path)
    fake.uninstall()
    _CALLED.clear()
    with pytest.raises(UntrustedCheckpointError, match="_side_effect"):
        load_s3prl_checkpoint(path)
    assert _CALLED == []


def test_build_names_forward_and_framing():
    for name in ("tiny-mockingjay", "tiny-tera", "tiny-audio-albert"):
        m = build_s3prl(name)
        assert m.random_weights and not m.training
        wavs = [torch.randn(8000), torch.randn(5600)]
        feats, lens = m.extract_features(wavs)
        assert feats.shape[-1] == 80 and lens.tolist() == [51, 36]
        out = m(feats, lens, output_attentions=True)
        dr = m.config.downsample_rate
        assert m.frame_stride == 160 * dr
        assert out.lengths.tolist() == [51 // dr, min(-(-36 // dr), 51 // dr)]
        assert m.num_frames(8000) == 51 // dr
        A = out.attentions[0]
        assert A.shape == (2, 4, 51 // dr, 51 // dr)
        torch.testing.assert_close(A.sum(-1), torch.ones_like(A.sum(-1)))
        assert float(A[1, :, :, int(out.lengths[1]):].max()) < 1e-30  # padded keys get no weight
    m = build_s3prl("tiny-audio-albert")
    assert m.encoder.layer[0].attention.self.query.weight is m.encoder.layer[1].attention.self.query.weight
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in build_s3prl(
        "tiny-tera", num_hidden_layers=1).parameters())
    m = build_s3prl("tiny-tera", num_hidden_layers=3, pre_layer_norm=True)
    assert m.num_layers == 3 and hasattr(m.encoder, "LayerNorm")
    with pytest.raises(ValueError, match="unknown s3prl model"):
        build_s3prl("mockingjay-huge")
    with pytest.raises(TypeError, match="unknown option"):
        build_s3prl("tiny-tera", hidden_sise=8)


def test_base_configs():
    for name, share in (("mockingjay-base", False), ("tera-base", False), ("audio-albert-base", True)):
        m = build_s3prl(name)
        c = m.config
        assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (768, 3, 12, 3072)
        assert c.share_layer == share and c.input_dim == 80 and m.frame_stride == 160


def test_attend_is_the_override_point_and_head_mask(tmp_path, fake):
    block = transformer_block(share_layer=True, num_hidden_layers=3)
    sd = write_checkpoint(tmp_path / "a.ckpt", fake, block, AUDIO_MEL80, "upstream")
    model = load_s3prl_checkpoint(tmp_path / "a.ckpt").double()
    feats, lens = padded_feats([14, 9], 80, seed=3)
    feats = feats.double()
    base = model(feats, lens).last_hidden_state
    mods = [m for m in model.modules() if isinstance(m, S3prlSelfAttention)]
    assert len(mods) == 3 and mods == model.attention_modules()  # one module per layer, shared weights
    seen = []

    def spy(att):
        def attend(q, k, v, lengths):
            seen.append((mods.index(att), att.layer_index, tuple(q.shape), lengths.tolist()))
            return S3prlSelfAttention.attend(att, q, k, v, lengths)
        return attend

    for att in mods:
        att.attend = spy(att)  # the patcher's override point: an instance attribute
    torch.testing.assert_close(model(feats, lens).last_hidden_state, base, rtol=0, atol=0)
    assert seen == [(i, i, (2, 4, 14, 4), [14, 9]) for i in range(3)]
    for att in mods:
        del att.attend
    # head mask = zeroing that head's map in the reference
    hm = torch.ones(3, 4, dtype=torch.float64)
    hm[1, 2] = 0.0
    out = model(feats, lens, head_mask=hm).last_hidden_state
    ref, _, _, _ = reference_forward(sd, block, feats, head_mask=hm)
    assert float((out - ref).abs().max()) < 1e-10


# ----------------------------------------------------------------------------------
# satkern.patch on s3prl models (the patcher lives in satkern/patching)
# ----------------------------------------------------------------------------------
def _randomize(model, seed):
    """Weights far from s3prl's N(0, 0.02) init, so the maps are far from uniform."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("weight") and p.dim() == 2:
            p.data.copy_(2.0 * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        else:
            p.data.copy_((1.0 if "LayerNorm.weight" in name else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
    return model


PATCH_MODELS = {
    "tiny-tera": {},
    "tiny-mockingjay": {},  # downsample_rate 3
    "tiny-audio-albert": {},  # share_layer
    "tiny-tera-preln": {"pre_layer_norm": True},
}


@pytest.mark.parametrize("name", sorted(PATCH_MODELS))
def test_patch_matches_eager_and_removes_exactly(name):
    import satkern
    from satkern.metrics import head_metrics_from_map

    model = _randomize(build_s3prl(name.replace("-preln", ""), **PATCH_MODELS[name]), seed=len(name))
    g = torch.Generator().manual_seed(11)
    wavs = [torch.randn(n, generator=g) for n in (9000, 6200, 4100)]
    feats, lens = model.extract_features(wavs)
    eager = model(feats, lens, output_attentions=True)
    frames = eager.lengths
    assert frames.tolist() == model.model_lengths(lens, feats.shape[1]).tolist()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    with satkern.patch(model, backend="reference") as h:
        patched = model(feats, lens)
    assert h.num_layers == model.num_layers and h.num_heads == model.num_heads
    ref = eager.last_hidden_state
    # relative to the output's scale, over every frame (padded ones included)
    err = float((patched.last_hidden_state - ref).abs().max()) / float(ref.abs().max())
    assert err < 1e-5, f"{name}: patched vs eager worst error {err:.3e} (relative to max |out|)"
    # and as close to the float64 model as float32 eager is (at most 2x its error)
    model64 = copy.deepcopy(model).double()
    truth = model64(feats.double(), lens).last_hidden_state
    e_eager = float((ref.double() - truth).abs().max())
    with satkern.patch(model, backend="reference"):
        e_patch = float((model(feats, lens).last_hidden_state.double() - truth).abs().max())
    assert e_patch <= 2 * e_eager + 1e-7, f"{name}: patched error {e_patch:.3e} vs eager float32 {e_eager:.3e}"

    # removal restores the model exactly
    assert all("attend" not in m.__dict__ for m in model.attention_modules())
    after = model(feats, lens, output_attentions=True)
    assert torch.equal(after.last_hidden_state, ref)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

    # captured metrics = the metrics of the eager maps
    assert h.lengths.tolist() == frames.tolist()
    m = h.metrics
    assert m.G.shape == (3, model.num_layers, model.num_heads)
    for layer, A in enumerate(eager.attentions):
        r = head_metrics_from_map(A, frames)
        for w in "GVDW":
            got, want = getattr(m, w)[:, layer].double(), getattr(r, w)
            e = float((got - want).abs().max())
            # float32 q/k in both paths; observed worst ~1e-6
            assert e < 1e-5 * (1 + float(want.abs().max())), f"{name} layer {layer} {w}: worst error {e:.3e}"


def test_compiled_model_does_not_recompile_per_length_and_matches_eager():
    """The position table is computed in the graph under torch.compile (eager keeps its cache, and the
    same values): the model compiles with fullgraph=True, eight batch lengths make at most two graphs
    (the frame stacking branches on whether T % 3 is 0; the cache's Python-side sizing had made one
    graph per length), and the outputs equal eager."""
    import torch._dynamo

    from satkern.models.s3prl.model import _sinusoid, position_encoding
    from satkern.pretrain import PretrainConfig, build_model

    for T, H in ((1, 7), (65, 128), (300, 768)):
        assert torch.equal(position_encoding(T, H), _sinusoid(T, H))  # cache and in-graph table agree
    cfg = PretrainConfig(corpus="x", out="x", layers=2, hidden=64, heads=2, ffn=64)
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    model.eval()
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model.forward, backend=counting, fullgraph=True, dynamic=True)
    gen = torch.Generator().manual_seed(3)
    for T in (30, 31, 32, 47, 48, 49, 90, 91):
        x = torch.randn(2, T, model.config.input_dim, generator=gen)
        lengths = torch.tensor([T, T // 2])
        got = compiled(x, lengths)[0]
        want = model(x, lengths)[0]
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), T
    assert 1 <= len(graphs) <= 2, len(graphs)
    torch._dynamo.reset()

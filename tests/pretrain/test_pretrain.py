"""satkern pretrain: masking, loss goes down, bit-for-bit resume, checkpoint round trip, bad input."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from satkern.cli import main as cli_main
from satkern.models import load_model
from satkern.models.s3prl import read_checkpoint
from satkern.pretrain import PretrainConfig, build_model, mask_frames, pretrain
from satkern.pretrain.evaluate import masked_reconstruction, utterance_features
from satkern.pretrain.data import training_utterances
from satkern.corpus.audio import load_audio

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "corpus"
TINY = dict(layers=1, hidden=32, heads=2, ffn=32, downsample=3, n_mels=40, mask_consecutive=3, progress=False,
            threads=1)



def assert_same_training_state(a, b):
    """Two s3prl training checkpoints (dicts) hold bit-equal model, head and optimizer state."""
    for key in ("Transformer", "SpecHead"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for sa, sb in zip(a["Optimizer"]["state"].values(), b["Optimizer"]["state"].values()):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k

def _cfg(out, **kw):
    args = dict(TINY, corpus=str(FIXTURE), out=str(out), steps=8, batch_seconds=6.0, save_every=4, lr=2e-3)
    args.update(kw)
    return PretrainConfig(**args)


def _losses(out):
    with open(Path(out) / "loss.csv", newline="") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f)]


# ------------------------------------------------------------------ masking
def test_masking_spans_proportion_and_zeroing():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 400, 6) + 5.0  # no frame is zero before masking
    lengths = torch.tensor([400, 250])
    masked, label = mask_frames(x, lengths, 3, 0.15, gen, alter=False)
    for b, L in enumerate(lengths.tolist()):
        frac = label[b, :L].double().mean().item()
        assert 0.10 <= frac <= 0.16, frac  # round(L * 0.15 / 3) spans of 3, overlaps allowed
        assert not label[b, L:].any()  # padding is never masked
        assert torch.all(masked[b, label[b]] == 0)  # alter=False: every chosen frame zeroed
        assert torch.equal(masked[b, ~label[b]], x[b, ~label[b]])
        # every masked run is a union of length-3 spans: no run shorter than 3
        runs, n = [], 0
        for v in label[b, :L].tolist() + [False]:
            if v:
                n += 1
            elif n:
                runs.append(n)
                n = 0
        assert min(runs) >= 3


# ------------------------------------------------------------------ training
def test_tiny_pretraining_lowers_masked_l1(tmp_path):
    cfg = _cfg(tmp_path / "run", steps=25, save_every=25, batch_seconds=6.0, warmup=0.1, dropout=0.0, lr=5e-3)
    utts, _ = training_utterances(cfg.corpus, cfg.split)
    torch.manual_seed(cfg.seed)
    model, head = build_model(cfg)  # pretrain() seeds then builds the same way: its initial weights
    feats = [utterance_features(model, load_audio(u.audio, 16000)) for u in utts[:8]]
    before = masked_reconstruction(model, head, feats, 3, seed=1)["model_l1"]
    summary = pretrain(cfg)
    states = read_checkpoint(summary["checkpoint"])
    model.load_state_dict(states["Transformer"])
    head.load_state_dict(states["SpecHead"])
    after = masked_reconstruction(model, head, feats, 3, seed=1)["model_l1"]
    print("masked L1 before / after", before, after)
    assert after < 0.98 * before, (before, after)  # deterministic evaluation: any drop is learning


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path):
    full = pretrain(_cfg(tmp_path / "full", monitor_every=3))
    stopped = pretrain(_cfg(tmp_path / "killed", stop_after=4, monitor_every=3))
    assert stopped == {"stopped_at": 4}
    # what a kill after step 5 leaves behind: loss rows beyond the checkpoint
    with open(tmp_path / "killed" / "loss.csv", "a") as f:
        f.write("5,0,9.999999,1e-3,1,0.0\n")
    resumed = pretrain(_cfg(tmp_path / "killed", resume=True, monitor_every=3))
    assert full["steps"] == resumed["steps"] == 8
    # the held-out measurements (steps 0, 3, 6, 8) are the same too, the one after the kill re-measured
    monitor_full = (tmp_path / "full" / "monitor.csv").read_text()
    assert [int(line.split(",")[0]) for line in monitor_full.splitlines()[1:]] == [0, 3, 6, 8]
    assert monitor_full == (tmp_path / "killed" / "monitor.csv").read_text()
    a = read_checkpoint(full["checkpoint"])
    b = read_checkpoint(resumed["checkpoint"])
    assert_same_training_state(a, b)
    assert torch.equal(a["Satkern_Resume"]["rng"]["torch"], b["Satkern_Resume"]["rng"]["torch"])
    assert [l for l in _losses(tmp_path / "full")] == [l for l in _losses(tmp_path / "killed")]
    assert len(_losses(tmp_path / "full")) == 8


def test_checkpoint_layout_and_round_trip_through_load_model(tmp_path):
    summary = pretrain(_cfg(tmp_path / "run", steps=4))
    path = summary["checkpoint"]
    raw = torch.load(path, weights_only=True)  # plain weights_only: tensors and containers only
    assert {"Transformer", "SpecHead", "Upstream_Config", "Config", "Step", "Optimizer"} <= set(raw)
    assert set(raw["Upstream_Config"]) >= {"transformer", "task", "audio"}
    assert raw["Upstream_Config"]["task"]["mask_consecutive_min"] == 3
    assert not any(k.startswith(("Transformer.", "module.")) for k in raw["Transformer"])  # no prefix
    assert raw["Step"] == 4
    sm = load_model(path)
    assert sm.random_weights is False and sm.family == "s3prl"
    torch.manual_seed(123)
    model, head = build_model(_cfg(tmp_path / "x"))
    model.load_state_dict(raw["Transformer"])
    model.eval()
    wav = load_audio(next(FIXTURE.glob("TEST/*/*/*.WAV")), 16000)
    inputs, frames = sm.prepare([wav])
    with torch.no_grad():
        got = sm(inputs).last_hidden_state
        want = model(inputs["feats"], inputs["lengths"]).last_hidden_state
    assert got.shape[1] == int(frames[0]) > 0
    assert torch.equal(got, want)


# ------------------------------------------------------------------ bad input
def _cli(args, capsys):
    rc = cli_main(["pretrain", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_corpus_without_alignments_or_audio_is_refused(tmp_path, capsys):
    no_align = tmp_path / "noalign"
    no_align.mkdir()
    shutil.copy(next(FIXTURE.glob("TRAIN/*/*/*.WAV")), no_align / "a.wav")
    rc, err = _cli(["--corpus", str(no_align), "--out", str(tmp_path / "o1"), "--steps", "1"], capsys)
    assert rc == 2 and len(err) == 1 and "--corpus" in err[0] and "alignment" in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.PHN").write_text("0 10 h#\n")
    rc, err = _cli(["--corpus", str(empty), "--out", str(tmp_path / "o2"), "--steps", "1"], capsys)
    assert rc == 2 and len(err) == 1 and "--corpus" in err[0] and "audio" in err[0]
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_existing_out_without_resume_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    rc, err = _cli(["--corpus", str(FIXTURE), "--out", str(out), "--steps", "1"], capsys)
    assert rc == 2 and len(err) == 1 and "--out" in err[0] and "--resume" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"


def test_resume_without_checkpoint_and_bad_values(tmp_path, capsys):
    rc, err = _cli(["--corpus", str(FIXTURE), "--out", str(tmp_path / "none"), "--resume"], capsys)
    assert rc == 2 and len(err) == 1 and "--resume" in err[0]
    rc, err = _cli(["--corpus", str(FIXTURE), "--out", str(tmp_path / "o"), "--hidden", "30", "--heads", "4"], capsys)
    assert rc == 2 and len(err) == 1 and "--hidden" in err[0]
    assert not (tmp_path / "o").exists()


def test_unknown_flag_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["pretrain", "--corpus", str(FIXTURE), "--out", str(tmp_path / "o"), "--bogus"])
    assert e.value.code == 2
    assert "--bogus" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ the monitor
def test_monitor_measures_what_the_evaluation_measures(tmp_path):
    """monitor.csv's numbers equal the independent eager evaluation of the saved weights: L1 ratio of
    masked_reconstruction, and per head the mean attention distance of materialized maps."""
    from satkern.pretrain.evaluate import attention_distances
    from satkern.pretrain.monitor import choose_spread, read_monitor

    cfg = _cfg(tmp_path / "run", steps=6, save_every=6, monitor_every=6, monitor_utterances=5)
    summary = pretrain(cfg)
    assert summary["monitor"]["utterances"] == 5
    assert (tmp_path / "run" / "monitor.png").stat().st_size > 10_000
    rows = read_monitor(tmp_path / "run" / "monitor.csv")
    assert [r["step"] for r in rows] == [0, 6]
    torch.manual_seed(cfg.seed)
    model, head = build_model(cfg)
    states = read_checkpoint(summary["checkpoint"])
    model.load_state_dict(states["Transformer"])
    head.load_state_dict(states["SpecHead"])
    utts, _ = training_utterances(cfg.corpus, "TEST")
    feats = [utterance_features(model, load_audio(u.audio, 16000)) for u in choose_spread(utts, 5)]
    rec = masked_reconstruction(model, head, feats, 3, seed=cfg.seed)
    assert rows[-1]["ratio"] == pytest.approx(rec["ratio"], abs=2e-6)
    dist, D = attention_distances(model, feats)
    got = torch.tensor([rows[-1][f"dist_L0_H{h}"] for h in range(2)], dtype=torch.float64)
    assert torch.allclose(got, dist[0], atol=2e-4), (got, dist[0])
    assert rows[-1]["min_distance"] == pytest.approx(float(dist.min()), abs=2e-4)
    assert rows[-1]["d_spread"] == pytest.approx(float(D.max() - D.min()), abs=1e-5)


def test_monitor_holds_out_a_split_without_alignments(tmp_path):
    """The held-out split needs audio only: a TEST/ without .PHN files is measured, not an error."""
    corpus = tmp_path / "corpus"
    shutil.copytree(FIXTURE / "TRAIN", corpus / "TRAIN")
    shutil.copytree(FIXTURE / "TEST", corpus / "TEST", ignore=shutil.ignore_patterns("*.PHN"))
    summary = pretrain(_cfg(tmp_path / "run", corpus=str(corpus), steps=2, save_every=2, monitor_utterances=3))
    assert summary["monitor"]["utterances"] == 3 and summary["monitor"]["seconds_this_run"] > 0
    assert (tmp_path / "run" / "monitor.csv").read_text().count("\n") == 3  # header, step 0, step 2


def test_monitor_is_off_without_a_held_out_split(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(FIXTURE / "TRAIN", corpus / "TRAIN")
    summary = pretrain(_cfg(tmp_path / "run", corpus=str(corpus), steps=2, save_every=2))
    assert "off" in summary["monitor"] and not (tmp_path / "run" / "monitor.csv").exists()


def test_local_init_starts_heads_local_and_keeps_s3prl_weights_elsewhere():
    from satkern.pretrain.train import upstream_config

    base = _cfg("x", layers=2, hidden=64, heads=2, local_init_heads=0)
    local = _cfg("x", layers=2, hidden=64, heads=2, local_init_heads=1, local_init_gain=1.5)
    torch.manual_seed(0)
    m0, _ = build_model(base)
    torch.manual_seed(0)
    m1, _ = build_model(local)
    assert upstream_config(base) == upstream_config(local)  # same architecture: an s3prl checkpoint either way
    s0, s1 = m0.state_dict(), m1.state_dict()
    changed = sorted(k for k in s0 if not torch.equal(s0[k], s1[k]))
    assert changed == [f"encoder.layer.{i}.attention.self.{p}.weight" for i in range(2) for p in ("key", "query")]
    dh = 32
    for i in range(2):
        w0 = s0[f"encoder.layer.{i}.attention.self.query.weight"]
        w1 = s1[f"encoder.layer.{i}.attention.self.query.weight"]
        assert torch.allclose(w1[:dh, :dh] - w0[:dh, :dh], 1.5 * torch.eye(dh))
        assert torch.equal(w1[dh:], w0[dh:])  # head 1 keeps s3prl's initialization
    # on a real utterance, the initialized head of layer 0 attends more locally than any untouched head
    from satkern.pretrain.evaluate import attention_distances

    wav = load_audio(FIXTURE / "TEST" / "DR1" / "MKAL2" / "SX021.WAV", 16000)
    f = utterance_features(m1, wav)
    d1, _ = attention_distances(m1, [f])
    d0, _ = attention_distances(m0, [f])
    assert d1[0, 0] < 0.5 * d0.min(), (d1, d0)
    with pytest.raises(ValueError, match="--local-init-heads"):
        _cfg("x", heads=2, local_init_heads=3).validate()


def test_local_init_shift_starts_heads_one_frame_back_and_ahead():
    from satkern.pretrain.planted import _rotation

    # the rotation is orthogonal times the gain and the identity at shift 0
    r = _rotation(32, 128, 1.0, 1.5)
    assert torch.allclose(r @ r.T, 2.25 * torch.eye(32), atol=1e-5)
    assert torch.allclose(_rotation(32, 128, 0.0, 1.5), 1.5 * torch.eye(32))
    cfg = _cfg("x", layers=2, hidden=128, heads=4, local_init_heads=2, local_init_gain=3.0, local_init_shift=1)
    torch.manual_seed(0)
    m, _ = build_model(cfg)
    wav = load_audio(FIXTURE / "TEST" / "DR1" / "MKAL2" / "SX021.WAV", 16000)
    f = utterance_features(m, wav)
    m.eval()
    with torch.no_grad():
        att = m(f[None], torch.tensor([f.shape[0]]), output_attentions=True).attentions
    for A in att:  # [1, H, T, T]
        T = A.shape[-1]
        rows = torch.arange(2, T - 2)
        peak = A[0, :, rows].argmax(-1) - rows  # [H, rows]: offset of each row's largest weight
        assert (peak[0] == -1).float().mean() > 0.9, peak[0]  # head 0: the frame before
        assert (peak[1] == 1).float().mean() > 0.9, peak[1]  # head 1: the frame after
        assert (peak[2].abs() <= 1).float().mean() < 0.5  # head 2 keeps s3prl's initialization
    with pytest.raises(ValueError, match="--local-init-shift"):
        _cfg("x", local_init_heads=1, local_init_shift=-1).validate()


def test_position_dims_hold_the_position_table_alone_through_training(tmp_path):
    from satkern.models.s3prl.model import position_encoding

    out = tmp_path / "run"
    pretrain(_cfg(out, hidden=64, heads=2, position_dims=16, steps=4, save_every=4))
    init = _cfg("x", hidden=64, heads=2, position_dims=16)
    torch.manual_seed(init.seed)
    model, _ = build_model(init)
    model.load_state_dict(read_checkpoint(out / "states-4.ckpt")["Transformer"])
    lin = model.input_representations.spec_transform
    assert torch.count_nonzero(lin.weight[:16]) == 0 and torch.count_nonzero(lin.bias[:16]) == 0
    assert torch.count_nonzero(lin.weight[16:]) == lin.weight[16:].numel()  # the rest trained as usual
    torch.manual_seed(init.seed)
    m0, _ = build_model(_cfg("x", hidden=64, heads=2))
    assert not torch.equal(m0.input_representations.spec_transform.weight[16:], lin.weight[16:])
    # before its LayerNorm the input representation's first 16 dims are the table alone
    x = torch.randn(1, 20, lin.in_features)
    pre = lin(x) + position_encoding(20, 64)[None]
    assert torch.allclose(pre[0, :, :16], position_encoding(20, 64)[:, :16])
    with pytest.raises(ValueError, match="--position-dims"):
        _cfg("x", hidden=64, heads=2, position_dims=64).validate()
    # held at the input only, the layers still write into those dims
    layer = model.encoder.layer[0]
    assert torch.count_nonzero(layer.output.dense.weight[:16]) > 0


def test_position_layers_keep_every_residual_write_out_of_the_table(tmp_path):
    out = tmp_path / "run"
    cfg = dict(hidden=64, heads=2, layers=2, position_dims=16, position_layers=True)
    pretrain(_cfg(out, steps=4, save_every=4, **cfg))
    init = _cfg("x", **cfg)
    torch.manual_seed(init.seed)
    model, _ = build_model(init)
    model.load_state_dict(read_checkpoint(out / "states-4.ckpt")["Transformer"])
    torch.manual_seed(init.seed)
    start, _ = build_model(init)
    for layer, layer0 in zip(model.encoder.layer, start.encoder.layer):
        for lin, lin0 in ((layer.attention.output.dense, layer0.attention.output.dense),
                          (layer.output.dense, layer0.output.dense)):
            assert torch.count_nonzero(lin.weight[:16]) == 0 and torch.count_nonzero(lin.bias[:16]) == 0
            assert torch.count_nonzero(lin.weight[16:]) == lin.weight[16:].numel()
            assert not torch.equal(lin.weight[16:], lin0.weight[16:])  # the rest trained
    # what each residual write adds to those dims is zero for any input
    layer = model.encoder.layer[0]
    att = layer.attention.output.dense(torch.randn(1, 30, 64))
    ffn = layer.output.dense(torch.randn(1, 30, layer.output.dense.in_features))
    assert torch.count_nonzero(att[..., :16]) == 0 and torch.count_nonzero(ffn[..., :16]) == 0
    with pytest.raises(ValueError, match="--position-layers needs --position-dims"):
        _cfg("x", position_layers=True).validate()


def test_local_init_lr_moves_the_planted_query_key_rows_at_their_own_rate():
    import copy

    from satkern.pretrain.planted import PlantedRate

    cfg = _cfg("x", layers=2, hidden=64, heads=2, local_init_heads=1)
    torch.manual_seed(cfg.seed)
    model, _ = build_model(cfg)
    model.eval().double()  # no dropout: both copies see the same gradients; float64: exact ratios
    slow = copy.deepcopy(model)
    x = torch.randn(2, 25, model.config.input_dim, dtype=torch.float64)
    lengths = torch.tensor([25, 18])
    steps = []
    for m, scale in ((model, None), (slow, 0.25)):
        start = {k: v.clone() for k, v in m.state_dict().items()}
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
        m(x, lengths)[0].pow(2).mean().backward()
        if scale is None:
            opt.step()
        else:
            with PlantedRate(m, 1, scale):
                opt.step()
        steps.append({k: v - start[k] for k, v in m.state_dict().items()})
    full, part = steps
    rows = 32  # one planted head of size 64 / 2
    moved_rows = 0
    for k in full:
        if ".attention.self.query." in k or ".attention.self.key." in k:
            assert torch.allclose(part[k][:rows], 0.25 * full[k][:rows], atol=1e-12, rtol=1e-9), k
            assert torch.equal(part[k][rows:], full[k][rows:]), k  # the other head: the full rate
            moved_rows += int(full[k][:rows].abs().sum() > 0)
        else:
            assert torch.equal(part[k], full[k]), k
    assert moved_rows == 8  # query and key, weight and bias, of both layers moved
    with pytest.raises(ValueError, match="--local-init-lr needs --local-init-heads"):
        _cfg("x", local_init_lr=1e-4).validate()
    with pytest.raises(ValueError, match="--local-init-lr must be > 0"):
        _cfg("x", local_init_heads=1, local_init_lr=0.0).validate()


def test_local_init_lr_run_resumes_bit_for_bit(tmp_path):
    kw = dict(hidden=64, heads=2, layers=2, local_init_heads=1, local_init_lr=5e-5, steps=4, save_every=2)
    pretrain(_cfg(tmp_path / "a", **kw))
    pretrain(_cfg(tmp_path / "b", stop_after=2, **kw))
    pretrain(_cfg(tmp_path / "b", resume=True, **kw))
    assert_same_training_state(read_checkpoint(tmp_path / "a" / "states-4.ckpt"),
                               read_checkpoint(tmp_path / "b" / "states-4.ckpt"))
    pretrain(_cfg(tmp_path / "c", **{**kw, "local_init_lr": None}))  # the planted rows at --lr
    init = _cfg("x", **kw)
    torch.manual_seed(init.seed)
    start = build_model(init)[0].state_dict()
    a = read_checkpoint(tmp_path / "a" / "states-4.ckpt")["Transformer"]
    c = read_checkpoint(tmp_path / "c" / "states-4.ckpt")["Transformer"]
    for k in ("encoder.layer.0.attention.self.query.weight", "encoder.layer.1.attention.self.key.weight"):
        assert (a[k][:32] - start[k][:32]).norm() < 0.2 * (c[k][:32] - start[k][:32]).norm()


def test_attention_dropout_is_its_own_option():
    from satkern.pretrain.train import upstream_config

    assert upstream_config(_cfg("x", dropout=0.1))["transformer"]["attention_probs_dropout_prob"] == 0.1
    up = upstream_config(_cfg("x", dropout=0.1, attention_dropout=0.0))["transformer"]
    assert up["attention_probs_dropout_prob"] == 0.0 and up["hidden_dropout_prob"] == 0.1
    with pytest.raises(ValueError, match="--attention-dropout"):
        _cfg("x", attention_dropout=1.0).validate()


def test_neighbour_fill_interpolates_in_time_at_the_feature_rate():
    from satkern.pretrain.evaluate import neighbour_fill

    t = torch.arange(12, dtype=torch.float64)
    feats = torch.stack([t, 2 * t + 1], dim=1)  # [12 feature frames, 2]: linear in time
    masked = torch.tensor([False, True, False, False])  # stacked frame 1 = feature frames 3..5 (rate 3)
    interp, near = neighbour_fill(feats, masked, 3)
    assert interp.shape == (4, 6)
    assert torch.allclose(interp, feats.reshape(4, 6))  # a linear signal is interpolated exactly
    assert near[1].tolist() == [2.0, 5.0, 2.0, 5.0, 6.0, 13.0]  # frames 3, 4 copy frame 2; frame 5 copies 6
    # a masked run at the start copies the first known frame
    interp0, near0 = neighbour_fill(feats, torch.tensor([True, False, False, False]), 3)
    assert interp0[0].tolist() == [3.0, 7.0] * 3 and near0[0].tolist() == [3.0, 7.0] * 3

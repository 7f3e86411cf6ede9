"""``satkern analyze --head-maps N``: every head's map of a few utterances, pooled and quantized; the
stored values against the model's own float64 maps, the error bound, and the file's round trip."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from satkern.analysis import AnalyzeConfig, analyze, load_head_maps
from satkern.analysis.head_maps import (HEAD_MAPS_VERSION, bin_counts, capture_head_maps, choose_head_map_utterances,
                                        dequantize_rows, pool_factor, pool_map, quantize_rows)
from satkern.analysis.maps import capture_maps
from satkern.corpus import load_audio

from eager_reference import FIXTURE, MODEL, tiny_model


def _pool_reference(A, factor):
    """Mean of every (query bin, key bin) block of a full map, by loops over frames."""
    T = A.shape[0]
    P = -(-T // factor)
    out = np.zeros((P, P))
    for i in range(P):
        for j in range(P):
            out[i, j] = A[i * factor:(i + 1) * factor, j * factor:(j + 1) * factor].mean()
    return out


def test_quantization_error_is_within_row_max_over_510():
    rng = np.random.default_rng(0)
    s = rng.normal(0, 3, (4, 3, 57, 57))
    A = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    A[0, 0, 5] = 0.0  # an empty row (a padded query) stays 0
    q, rm = quantize_rows(A)
    assert q.dtype == np.uint8 and rm.dtype == np.float32 and rm.shape == A.shape[:-1]
    back = dequantize_rows(q, rm).astype(np.float64)
    err = np.abs(back - A)
    bound = rm.astype(np.float64)[..., None] / 510 + 1e-7
    assert (err <= bound).all(), float((err - bound).max())
    assert err.max() > 1e-4  # uint8 really rounds: the bound is being tested, not a no-op
    assert (back[0, 0, 5] == 0).all() and rm[0, 0, 5] == 0
    assert (q.max(-1)[rm > 0] == 255).all()  # each row uses the whole range


def test_pool_map_with_offsets_against_loops():
    rng = np.random.default_rng(1)
    T, f = 23, 4
    A = rng.random((T, T))
    P = -(-T // f)
    whole = pool_map(torch.from_numpy(A), f, P).numpy() / np.outer(bin_counts(T, f), bin_counts(T, f))
    np.testing.assert_allclose(whole, _pool_reference(A, f), rtol=1e-12)
    # two chunks (a block-diagonal map), added at their offsets
    blocks = np.zeros((T, T))
    blocks[:10, :10], blocks[10:, 10:] = A[:10, :10], A[10:, 10:]
    acc = torch.zeros(P, P, dtype=torch.float64)
    pool_map(torch.from_numpy(A[:10, :10].copy()), f, P, offset=0, out=acc)
    pool_map(torch.from_numpy(A[10:, 10:].copy()), f, P, offset=10, out=acc)
    np.testing.assert_allclose(acc.numpy() / np.outer(bin_counts(T, f), bin_counts(T, f)), _pool_reference(blocks, f),
                               rtol=1e-12)
    assert pool_factor(256) == 1 and pool_factor(257) == 2 and pool_factor(3000) == 12


def test_captured_maps_are_the_pooled_float64_maps():
    """Every head's pooled map equals the bin means of the map satkern.analysis.maps captures (the
    one the metrics describe), the pooling deviation is measured exactly, and the metrics are the patch's."""
    sm = tiny_model()
    torch.manual_seed(0)
    wav = torch.randn(int(1.3 * sm.sample_rate))
    cap = capture_head_maps(sm, wav, max_bins=16)
    L, H = cap.pooled.shape[:2]
    full = capture_maps(sm, wav, {l: list(range(H)) for l in range(L)})
    P = -(-cap.frames // cap.factor)
    assert cap.factor == -(-cap.frames // 16) > 1 and cap.pooled.shape == (L, H, P, P) and P <= 16
    dev = 0.0
    for (l, h), A in full.items():
        ref = _pool_reference(A, cap.factor)
        np.testing.assert_allclose(cap.pooled[l, h], ref, rtol=1e-10, atol=1e-14)
        up = np.repeat(np.repeat(ref, cap.factor, 0), cap.factor, 1)[:A.shape[0], :A.shape[0]]
        dev = max(dev, float(np.abs(A - up).max()))
    assert cap.pool_max_abs_deviation == pytest.approx(dev, rel=1e-9)
    # rows of the pooled map carry the whole attention once each key bin counts per frame
    c = bin_counts(cap.frames, cap.factor)
    np.testing.assert_allclose((cap.pooled * c).sum(-1), 1.0, atol=1e-9)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("head_maps") / "run"
    sm = tiny_model()
    analyze(AnalyzeConfig(model=MODEL, corpus=str(FIXTURE), out=str(out), head_maps=2, head_maps_for=(),
                          per_utterance=True, max_utterances=4, progress=False, budget_seconds=6.0),
            model=sm, log=lambda s: None)
    return out, sm


def test_head_maps_npz_holds_every_head_and_loads_back(run):
    out, sm = run
    summary = json.loads((out / "summary.json").read_text())
    hm = load_head_maps(out)  # the folder or the file
    assert "head_maps.npz" in summary["outputs"]
    assert summary["head_maps"]["utterances"] == [u.uid for u in hm.utterances]
    assert hm.model_name == summary["model"]["name"] and hm.weights_checksum == summary["model"]["weights_checksum"]
    per = pd.read_parquet(out / "utterances.parquet")
    heads = pd.read_csv(out / "heads.csv")
    L, H = summary["model"]["layers"], summary["model"]["heads"]
    assert (hm.layers, hm.heads) == (L, H)
    assert list(hm.category.reshape(-1)) == list(heads["category"])
    np.testing.assert_allclose(hm.corpus["G"].reshape(-1), heads["G"], rtol=1e-12)
    # the two utterances at the 25% and 75% duration quantiles of the analyzed ones
    durations = per.drop_duplicates("utterance").set_index("utterance")["duration"]
    order = sorted(durations.index, key=lambda u: (durations[u], u))
    assert [u.uid for u in hm.utterances] == [order[int(0.5 * 4 / 2)], order[int(1.5 * 4 / 2)]]
    for u in hm.utterances:
        wav = load_audio(FIXTURE / f"{u.uid}.WAV", sm.sample_rate)
        full = capture_maps(sm, wav, {l: list(range(H)) for l in range(L)})
        maps = u.maps()
        assert maps.shape == (L, H, u.bins, u.bins) and maps.dtype == np.float32
        assert u.frames == next(iter(full.values())).shape[0]
        assert len(u.phone_label) > 3 and u.logmel.shape[1] == 80
        worst = 0.0
        for (l, h), A in full.items():
            ref = _pool_reference(A, u.factor)
            err = np.abs(maps[l, h].astype(np.float64) - ref)
            assert (err <= ref.max(-1, keepdims=True) / 510 + 1e-6).all(), (l, h, float(err.max()))
            worst = max(worst, float(err.max()))
        assert u.quant_max_abs_error == pytest.approx(worst, rel=1e-3, abs=1e-7) and 0 < worst <= 1 / 510
        mine = per[per.utterance == u.uid].sort_values(["layer", "head"])
        for k in "GVDW":
            np.testing.assert_allclose(u.metrics[k].reshape(-1), mine[k], rtol=1e-5, atol=1e-6)


def test_round_trip_and_bad_files(run, tmp_path):
    out, _ = run
    hm = load_head_maps(out / "head_maps.npz")
    copy = tmp_path / "copy.npz"
    copy.write_bytes(hm.to_npz_bytes())
    back = load_head_maps(copy)
    for a, b in zip(hm.utterances, back.utterances):
        assert a.uid == b.uid and a.factor == b.factor
        np.testing.assert_array_equal(a.maps_q, b.maps_q)
        np.testing.assert_array_equal(a.row_max, b.row_max)
        np.testing.assert_array_equal(a.phone_label, b.phone_label)
        np.testing.assert_array_equal(a.bin_edges_s(hm.frame_rate_hz)[[0, -1]],
                                      [0.0, a.frames / hm.frame_rate_hz])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: corrupt"):
        load_head_maps(bad)
    with np.load(copy) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["version"] = np.array(HEAD_MAPS_VERSION + 1)
    np.savez(tmp_path / "v2.npz", **arrays)
    with pytest.raises(ValueError, match="version"):
        load_head_maps(tmp_path / "v2.npz")
    with pytest.raises(ValueError, match="no such file"):
        load_head_maps(tmp_path)


def test_choose_spreads_by_duration():
    class U:
        def __init__(self, uid, d):
            self.uid, self.duration = uid, d

    us = [U(f"u{i}", d) for i, d in enumerate([5.0, 1.0, 3.0, 2.0, 4.0])]
    assert [u.uid for u in choose_head_map_utterances(us, 1)] == ["u2"]  # the median length
    assert [u.uid for u in choose_head_map_utterances(us, 2)] == ["u3", "u4"]
    assert len(choose_head_map_utterances(us, 9)) == 5


def test_cli_refuses_an_unknown_utterance_in_one_line(tmp_path, capsys):
    from satkern.cli import main

    rc = main(["analyze", "--model", "tiny-mockingjay-base", "--corpus", str(FIXTURE), "--out", str(tmp_path / "o"),
               "--max-utterances", "2", "--no-progress", "--head-maps-for", "NOPE/x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--head-maps-for" in err[0] and "NOPE/x" in err[0]
    assert not (tmp_path / "o").exists()

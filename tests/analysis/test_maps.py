"""``satkern analyze --maps K``: which heads and utterances are shown, and that each stored map is the
map the job's metrics describe (checked against the per-utterance metrics and the model's own eager
attention)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from satkern.analysis import AnalyzeConfig, analyze
from satkern.analysis.maps import capture_maps, choose_heads, choose_utterances
from satkern.corpus import load_audio
from satkern.metrics import head_metrics_from_map, length_free

from eager_reference import FIXTURE, MODEL, tiny_model

N_UTT = 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("maps") / "run"
    sm = tiny_model()
    analyze(AnalyzeConfig(model=MODEL, corpus=str(FIXTURE), out=str(out), maps=1, max_utterances=N_UTT,
                          progress=False, budget_seconds=6.0), model=sm, log=lambda s: None)
    return out, sm


def test_maps_npz_layout_and_choice(run):
    out, _ = run
    summary = json.loads((out / "summary.json").read_text())
    z = np.load(out / "maps.npz")
    assert int(z["version"]) == 1
    assert str(z["model_name"]) == summary["model"]["name"]
    assert str(z["weights_checksum"]) == summary["model"]["weights_checksum"]
    assert "maps.npz" in summary["outputs"] and summary["maps"]["maps"] == 6
    heads = pd.read_csv(out / "heads.csv")
    per = pd.read_parquet(out / "utterances.parquet")  # --maps implies --per-utterance
    assert per["utterance"].nunique() == N_UTT
    uids = [str(u) for u in z["utt_ids"]]
    assert [str(r) for r in z["map_role"]] == ["global"] * 2 + ["vertical"] * 2 + ["diagonal"] * 2
    assert [str(p) for p in z["map_pick"]] == ["average", "extreme"] * 3
    for i in range(6):
        metric, l, h = str(z["map_metric"][i]), int(z["map_layer"][i]), int(z["map_head"][i])
        best = heads.loc[heads[metric].idxmax()]
        assert (l, h) == (int(best["layer"]), int(best["head"]))  # the most global / vertical / diagonal head
        rows = per[(per.layer == l) & (per["head"] == h)].set_index("utterance")
        mine = rows[metric]
        # chosen by the length-free value (G / log T, ...), not the raw one that grows with T
        free = pd.Series(length_free(metric, mine.to_numpy(), rows["frames"].to_numpy()), index=mine.index)
        uid = uids[int(z["map_utt"][i])]
        if str(z["map_pick"][i]) == "extreme":
            assert uid == free.idxmax()
        else:
            assert uid == (free - free.mean()).abs().idxmin()
        assert float(z["map_value"][i]) == pytest.approx(float(mine[uid]))
        A = z[str(z["map_key"][i])]
        assert A.dtype == np.float16 and A.shape[0] == A.shape[1]
        np.testing.assert_allclose(A.astype(np.float64).sum(-1), 1.0, atol=5e-3)  # float16 rows
        j = int(z["map_utt"][i])
        assert z[f"logmel_{j}"].shape[1] == 80 and len(z[f"phone_label_{j}"]) > 3
        assert np.all(np.diff(z[f"phone_start_{j}"]) >= 0)


def test_stored_maps_are_the_maps_the_metrics_describe(run):
    """The float64 capture gives back the job's per-utterance G, V, D, W; the stored float16 map
    equals it to float16 rounding."""
    out, sm = run
    z = np.load(out / "maps.npz")
    per = pd.read_parquet(out / "utterances.parquet")
    uids = [str(u) for u in z["utt_ids"]]
    for i in range(len(z["map_key"])):
        l, h, j = int(z["map_layer"][i]), int(z["map_head"][i]), int(z["map_utt"][i])
        wav = load_audio(FIXTURE / f"{uids[j]}.WAV", sm.sample_rate)
        A = capture_maps(sm, wav, {l: [h]})[(l, h)]
        m = head_metrics_from_map(torch.from_numpy(A)[None, None])
        row = per[(per.utterance == uids[j]) & (per.layer == l) & (per["head"] == h)].iloc[0]
        for k in "GVDW":
            assert float(getattr(m, k)[0, 0]) == pytest.approx(float(row[k]), abs=2e-5), (k, i)
        np.testing.assert_allclose(z[str(z["map_key"][i])].astype(np.float64), A, atol=1e-3, rtol=2e-3)


def test_capture_equals_the_s3prl_models_own_eager_maps():
    from satkern.models import load_model

    torch.manual_seed(0)
    sm = load_model("tiny-mockingjay-base")
    wav = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32))
    got = capture_maps(sm, wav, {0: [1, 3], 1: [0]})
    assert sorted(got) == [(0, 1), (0, 3), (1, 0)]
    feats, lengths = sm.model.extract_features([wav])
    with torch.no_grad():
        ref = sm.model(feats, lengths, output_attentions=True).attentions
    for (l, h), A in got.items():
        np.testing.assert_allclose(A, ref[l][0, h].double().numpy(), atol=1e-6)
        assert not np.allclose(A, 1.0 / A.shape[0], atol=1e-4)  # not a uniform map


def test_choice_rules():
    heads = {"G": np.array([[1.0, 3.0], [3.0, np.nan]]), "V": np.array([[0.5, 0.2], [0.1, 0.0]]), "D": None}
    got = choose_heads(heads, 2)
    assert got == [("global", "G", 0, 1, 3.0), ("global", "G", 1, 0, 3.0),  # tie: lower (layer, head) first
                   ("vertical", "V", 0, 0, 0.5), ("vertical", "V", 0, 1, 0.2)]
    picks = choose_utterances({"b": 2.0, "a": 4.0, "c": np.nan, "d": 4.0}, corpus_value=2.9)
    assert picks == {"average": ("b", 2.0), "extreme": ("a", 4.0)}
    assert choose_utterances({"x": np.nan}, 0.0) == {}
    # by length-free value: G = 2.5 on 13 frames (G / log T = 0.975, nearly uniform rows) is more global
    # than G = 3.0 on 100 frames (0.651), though its raw G is smaller
    vals, frames = {"long": 3.0, "short": 2.5}, {"long": 100, "short": 13}
    assert choose_utterances(vals, 0.0)["extreme"] == ("long", 3.0)  # raw: the longest wins
    picks = choose_utterances(vals, 0.66, metric="G", frames=frames)
    assert picks == {"extreme": ("short", 2.5), "average": ("long", 3.0)}


def test_bad_maps_argument_is_one_line(capsys, tmp_path):
    from satkern.cli import main

    rc = main(["analyze", "--model", MODEL, "--corpus", str(FIXTURE), "--out", str(tmp_path / "o"), "--maps", "-1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--maps" in err, err
    assert not (tmp_path / "o").exists()

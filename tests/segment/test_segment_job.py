"""`satkern segment` on a tiny s3prl model and a few fixture utterances: outputs, equality with the
same functions applied to the model's eager maps, bad files, bad arguments."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from satkern.cli import main as cli_main
from satkern.corpus import discover_corpus, load_audio, parse_textgrid, read_alignment
from satkern.models import load_model
from satkern.segment import boundaries, evaluate, true_boundaries, upsample_map
from satkern.segment.features import logmel_extractor, mfcc_from_logmel
from satkern.segment.job import PR_COLUMNS, SCORE_COLUMNS, SegmentConfig, segment_corpus

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
MODEL = "tiny-mockingjay-base"  # downsample rate 3: exercises the up-sampling
HEADS = [(0, 1), (1, 2)]
ALPHAS = (0.002, 0.01)
BETAS = (0.7, 1.0, 1.4)
PR_BETAS = (0.5, 1.0, 2.0)


@pytest.fixture(scope="module")
def threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny shapes: one thread is fastest on the shared CI machine
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, threads):
    root = tmp_path_factory.mktemp("corpus")
    spk = root / "TRAIN" / "DR1" / "MKAL0"
    spk.mkdir(parents=True)
    for n in range(1, 7):
        for ext in ("WAV", "PHN", "TXT"):
            shutil.copy(FIXTURE / "TRAIN" / "DR1" / "MKAL0" / f"SX00{n}.{ext}", spk / f"SX00{n}.{ext}")
    shutil.copy(FIXTURE / "TRAIN" / "DR1" / "MKAL0" / "SX007.WAV", spk / "SX007.WAV")  # no alignment
    (spk / "SX008.WAV").write_bytes(b"RIFF not really a wave file")  # unreadable
    shutil.copy(FIXTURE / "TRAIN" / "DR1" / "MKAL0" / "SX008.PHN", spk / "SX008.PHN")
    return root


@pytest.fixture(scope="module")
def model(threads):
    torch.manual_seed(0)
    return load_model(MODEL)


@pytest.fixture(scope="module")
def run(corpus, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    cfg = SegmentConfig(model=MODEL, corpus=str(corpus), out=str(out), features=("attention", "hidden:1", "mfcc"),
                        heads="0:1,1:2", tune_on=2, alpha_grid=ALPHAS, beta_grid=BETAS, pr_betas=PR_BETAS,
                        progress=False)
    summary = segment_corpus(cfg, model=model, log=lambda s: None)
    return out, summary


def test_outputs_and_summary(run):
    out, summary = run
    for name in ("scores.csv", "pr_curve.csv", "example.npz", "summary.json", "pr_curve.png", "pr_curve.svg"):
        assert (out / name).is_file(), name
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    assert list(scores.columns) == SCORE_COLUMNS
    assert set(scores["split"]) == {"tune", "test"}
    assert sorted(set(scores["features"])) == ["attention", "hidden:1", "mfcc"]
    assert sorted(scores[scores.features == "attention"]["head"].unique()) == ["0:1", "1:2"]
    pr = pd.read_csv(out / "pr_curve.csv", keep_default_na=False)
    assert list(pr.columns) == PR_COLUMNS and len(pr) == 4 * len(PR_BETAS)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["version"] == 1 and on_disk["kind"] == "segment"
    c = on_disk["counts"]
    assert (c["segmented"], c["scored_tune"], c["scored_test"], c["unaligned_segmented"]) == (7, 2, 4, 1)
    assert [s["utterance"] for s in on_disk["skipped"]] == ["TRAIN/DR1/MKAL0/SX008"]
    assert on_disk["utterances_per_second"] > 0
    for key in ("attention 0:1", "attention 1:2", "hidden:1", "mfcc"):
        t = on_disk["tuned"][key]
        assert t["alpha"] in ALPHAS and t["beta"] in BETAS
    assert on_disk["best_r_value"]["attention"]["head"] == on_disk["heads"]["best"]
    assert set(on_disk["best_r_value"]) == {"attention", "hidden:1", "mfcc"}
    for k in ("model", "corpus", "device", "versions", "commit", "tolerance", "heads"):
        assert k in on_disk
    # the tuned cell is the best tune R-value of the grid
    tune = scores[scores.split == "tune"]
    assert (tune["r_value"] <= 1).all()
    ex = np.load(out / "example.npz")
    T = ex["map"].shape[0]
    assert ex["map"].dtype == np.float32 and ex["map"].shape == (T, T)
    assert ex["kf"].dtype == np.uint8 and ex["kf"].shape == (T, T) and ex["score"].shape == (T,)
    assert ex["logmel"].dtype == np.float32 and ex["logmel"].shape[1] == 80
    assert str(ex["head"]) == on_disk["heads"]["best"]
    assert math.isclose(float(ex["hop"]), 0.01)


def _tiers(path):
    return {t.name: np.array([p[0] for p in t.items]) for t in parse_textgrid(path)}


def test_attention_run_equals_functions_on_eager_maps(run, corpus, model):
    """Boundaries in the TextGrids and the test scores equal boundaries() on the model's own eager
    maps (output_attentions, every head materialized here in the test only), up-sampled by R = 3."""
    out, summary = run
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    c = discover_corpus(corpus)
    test_ids = [u for u in sorted(x.uid for x in c.utterances) if u not in _tune_ids(out, scores)]
    rate = model.sample_rate
    for head in HEADS:
        name = f"{head[0]}:{head[1]}"
        tuned = summary["tuned"][f"attention {name}"]
        true_all, pred_all = [], []
        for uid in test_ids:
            u = next(x for x in c.utterances if x.uid == uid)
            wav = load_audio(u.audio, rate)
            inputs, frames = model.prepare([wav])
            with torch.inference_mode():
                res = model.forward(inputs, output_attentions=True)
            n = int(frames[0])
            A = res.attentions[head[0]][0, head[1], :n, :n].to(torch.float64)
            pred = boundaries(upsample_map(A, 3), tuned["alpha"], tuned["beta"], 0.01).numpy()
            tiers = _tiers(out / "textgrids" / f"{uid}.TextGrid")
            np.testing.assert_allclose(tiers[f"attention {name}"], pred, rtol=0, atol=1e-12)
            if u.alignment is None:  # segmented (TextGrid checked above), not scored
                assert "true" not in tiers
                continue
            segs = read_alignment(u.alignment, file_rate=u.sample_rate, target_rate=rate)
            true = true_boundaries([(s.start / rate, s.end / rate, s.label) for s in segs])
            np.testing.assert_allclose(tiers["true"], true, rtol=0, atol=1e-12)
            true_all.append(true)
            pred_all.append(pred)
        s = evaluate(true_all, pred_all, tolerance=0.02)
        row = scores[(scores.split == "test") & (scores.features == "attention") & (scores["head"] == name)].iloc[0]
        assert (row.hits, row.n_pred, row.n_true) == (s.hits, s.n_pred, s.n_true)
        assert math.isclose(row.r_value, s.r_value, rel_tol=1e-12)


def _tune_ids(out, scores):
    grids = out / "textgrids"
    summary = json.loads((out / "summary.json").read_text())
    # the tune split is a seeded sample; recompute it as the job does
    import random

    c = discover_corpus(summary["corpus"]["path"])
    aligned = sorted((u for u in c.utterances if u.alignment), key=lambda u: u.uid)
    return {u.uid for u in random.Random(summary["config"]["seed"]).sample(aligned, summary["config"]["tune_on"])}


def test_hidden_and_mfcc_tiers(run, corpus, model):
    out, summary = run
    c = discover_corpus(corpus)
    u = sorted(c.utterances, key=lambda x: x.uid)[0]
    wav = load_audio(u.audio, model.sample_rate)
    inputs, frames = model.prepare([wav])
    with torch.inference_mode():
        res = model.forward(inputs, output_hidden_states=True)
    n = int(frames[0])
    hid = res.hidden_states[1][0, :n].to(torch.float64).repeat_interleave(3, dim=0)
    t = summary["tuned"]["hidden:1"]
    tiers = _tiers(out / "textgrids" / f"{u.uid}.TextGrid")
    np.testing.assert_allclose(tiers["hidden:1"], boundaries(hid, t["alpha"], t["beta"], 0.01).numpy(), atol=1e-12)
    mf = mfcc_from_logmel(logmel_extractor(16000).extract_one(wav).to(torch.float64))
    t = summary["tuned"]["mfcc"]
    np.testing.assert_allclose(tiers["mfcc"], boundaries(mf, t["alpha"], t["beta"], 0.01).numpy(), atol=1e-12)
    # the utterance without an alignment is segmented, with no "true" tier
    tiers = _tiers(out / "textgrids" / "TRAIN/DR1/MKAL0/SX007.TextGrid")
    assert "true" not in tiers and "mfcc" in tiers


def test_mfcc_is_the_orthonormal_dct_ii():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 80, generator=g, dtype=torch.float64)
    N = 80
    ref = np.zeros((5, 13))
    for k in range(13):
        w = math.sqrt(1 / N) if k == 0 else math.sqrt(2 / N)
        ref[:, k] = w * sum(x[:, n].numpy() * math.cos(math.pi / N * (n + 0.5) * k) for n in range(N))
    np.testing.assert_allclose(mfcc_from_logmel(x).numpy(), ref, rtol=0, atol=1e-12)


def test_auto_heads_from_csv(corpus, model, tmp_path):
    L, H = 2, 4
    D = np.arange(L * H, dtype=float).reshape(L, H) * -0.1  # 0:0 most diagonal, then 0:1, 0:2
    pd.DataFrame({"layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L), "D": D.reshape(-1)}).to_csv(
        tmp_path / "heads.csv", index=False)
    cfg = SegmentConfig(model=MODEL, corpus=str(corpus), out=str(tmp_path / "out"), features=("attention",),
                        heads="auto", heads_from=str(tmp_path / "heads.csv"), candidates=3, keep_heads=2, tune_on=2,
                        alpha_grid=(0.01,), beta_grid=(1.0, 1.4), pr_betas=(1.0,), textgrids=False,
                        max_utterances=4, progress=False)
    s = segment_corpus(cfg, model=model, log=lambda m: None)
    assert s["heads"]["candidates"] == ["0:0", "0:1", "0:2"]
    assert len(s["heads"]["kept"]) == 2 and set(s["heads"]["kept"]) <= {"0:0", "0:1", "0:2"}
    r = s["heads"]["tune_r_value"]
    assert s["heads"]["best"] == max(s["heads"]["kept"], key=lambda h: (r[h], -s["heads"]["candidates"].index(h)))
    assert min(r[h] for h in s["heads"]["kept"]) >= max(r[h] for h in r if h not in s["heads"]["kept"])


@pytest.mark.parametrize("extra,needle", [
    (["--alpha-grid", "0"], "--alpha-grid"),
    (["--alpha-grid=-1,2"], "--alpha-grid"),
    (["--beta-grid", ""], "--beta-grid"),
    (["--alpha-grid", " , "], "--alpha-grid"),
    (["--features", "attention,pitch"], "--features"),
    (["--heads", "5:0"], "--heads"),
    (["--heads", "0:9"], "--heads"),
    (["--heads", "zero"], "--heads"),
    (["--tolerance", "0"], "--tolerance"),
    (["--tolerance=-0.02"], "--tolerance"),
    (["--features", "hidden:7"], "--features"),
    (["--threads", "0"], "--threads"),
])
def test_bad_arguments_one_line(corpus, tmp_path, capsys, extra, needle):
    rc = cli_main(["segment", "--model", MODEL, "--corpus", str(corpus), "--out", str(tmp_path / "o"),
                   "--no-progress", "--max-utterances", "3", "--tune-on", "1", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("satkern segment: error:") and needle in err[0], err


def test_auto_heads_by_computed_diagonality(corpus, model, tmp_path):
    """Without heads.csv, D comes from the fused distance statistic over the tune split; it ranks the
    heads as D computed here from the model's eager maps (METRICS.md eq. 3) does."""
    import random

    cfg = SegmentConfig(model=MODEL, corpus=str(corpus), out=str(tmp_path / "out"), features=("attention",),
                        heads="auto", candidates=3, keep_heads=1, tune_on=2, alpha_grid=(0.01,), beta_grid=(1.0,),
                        pr_betas=(1.0,), textgrids=False, max_utterances=4, progress=False)
    s = segment_corpus(cfg, model=model, log=lambda m: None)
    c = discover_corpus(corpus)
    aligned = sorted((u for u in c.utterances if u.alignment), key=lambda u: u.uid)[:4]
    tune = random.Random(0).sample(aligned, 2)
    D = torch.zeros(2, 4, dtype=torch.float64)
    for u in tune:
        inputs, frames = model.prepare([load_audio(u.audio, model.sample_rate)])
        with torch.inference_mode():
            res = model.forward(inputs, output_attentions=True)
        n = int(frames[0])
        q = torch.arange(n)
        dist = (q[:, None] - q[None, :]).abs().to(torch.float64)
        for layer, A in enumerate(res.attentions):
            D[layer] += -(A[0, :, :n, :n].to(torch.float64) * dist).sum((-1, -2)) / n ** 2 / len(tune)
    for h, d in s["heads"]["D"].items():
        layer, head = map(int, h.split(":"))
        assert math.isclose(d, float(D[layer, head]), rel_tol=1e-5)
    order = sorted(((l, h) for l in range(2) for h in range(4)), key=lambda lh: (-float(D[lh]), lh))
    assert s["heads"]["candidates"] == [f"{l}:{h}" for l, h in order[:3]]
    assert s["heads"]["kept"] == [s["heads"]["best"]]


def test_tune_on_must_leave_test_utterances(corpus, tmp_path, capsys):
    rc = cli_main(["segment", "--model", MODEL, "--corpus", str(corpus), "--out", str(tmp_path / "o"), "--no-progress",
                   "--tune-on", "6", "--alpha-grid", "0.01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--tune-on" in err[0], err

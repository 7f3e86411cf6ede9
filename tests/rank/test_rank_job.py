"""The ranking job and `satkern rank`: outputs, nesting over a given heads.csv, kill-and-resume, bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from satkern.rank.curves import CURVE_COLUMNS
from satkern.rank.job import RankConfig, rank

from rank_helpers import FIXTURE, MODEL

TIMING = ["forward_s_per_audio_s", "forward_s_per_audio_s_min", "forward_spread", "attention_share"]  # measured
ROUNDS = 3
REPO = Path(__file__).resolve().parents[2]


def _config(out, **kw):
    base = dict(model=MODEL, corpus=str(FIXTURE), out=str(out), orders=["G", "W", "random"], step=3,
                random_seeds=2, spans=[1, 4], span_modes=["zero", "renorm"],
                tasks=["phone", "speaker-frame", "speaker-utterance"], train_split="TRAIN[:0.6]",
                test_split="TRAIN[0.6:]", train_seconds=20.0, probe_steps=20, timing_seconds=2.0, timing_rounds=ROUNDS,
                progress=False)
    base.update(kw)
    return RankConfig(**base)


def _heads_csv(path, L=2, H=4, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L),
                       "G": rng.normal(size=L * H).round(1), "V": rng.normal(size=L * H),
                       "D": rng.normal(size=L * H), "W": rng.normal(size=L * H).round(1)})
    df.loc[[2, 5], "G"] = 0.7  # a tie: (0, 2) before (1, 1)
    df.to_csv(path, index=False)
    return df


@pytest.fixture(scope="module")
def full(tmp_path_factory, speech_model):
    root = tmp_path_factory.mktemp("rank")
    heads = root / "given_heads.csv"
    df = _heads_csv(heads)
    out = root / "full"
    summary = rank(_config(out, heads_from=str(heads)), model=speech_model, log=lambda s: None)
    return out, summary, df


def test_outputs_and_nested_pruned_sets(full):
    out, summary, heads = full
    for name in ("curves.csv", "summary.json", "fig5.png", "fig5.svg", "fig6a.png", "fig6a.svg"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "heads.csv").exists()  # given with heads_from, not recomputed
    df = pd.read_csv(out / "curves.csv")
    assert list(df.columns) == CURVE_COLUMNS
    s = json.loads((out / "summary.json").read_text())
    assert s["version"] == 1 and s["kind"] == "rank" and s["step"] == 3 and s["heads_from"].endswith("given_heads.csv")
    for key in ("model", "corpus", "device", "versions", "commit", "seeds", "tasks", "skipped_tasks", "orders",
                "spans", "wall_seconds"):
        assert key in s
    flat = list(zip(heads["G"], heads["layer"], heads["head"]))
    want_g = [(l, h) for _, l, h in sorted(flat, key=lambda t: (-t[0], t[1], t[2]))]
    flat_w = list(zip(heads["W"], heads["layer"], heads["head"]))
    want_w = [(l, h) for _, l, h in sorted(flat_w, key=lambda t: (t[0], t[1], t[2]))]
    for order, want in (("G", want_g), ("W", want_w)):
        assert s["orders"][order]["heads"] == [f"{l}:{h}" for l, h in want]
        rows = df[(df["order"] == order) & (df["task"] == "phone")].sort_values("step")
        assert rows["n_pruned"].tolist() == [0, 3, 6, 8]
        prev = set()
        for _, r in rows.iterrows():
            got = [] if pd.isna(r["pruned_heads"]) else r["pruned_heads"].split(";")
            assert got == [f"{l}:{h}" for l, h in want[:r["n_pruned"]]]
            assert prev <= set(got)
            prev = set(got)
    # the unpruned point is one point, shared by every order
    zero = df[(df["n_pruned"] == 0) & (df["order"] != "span") & (df["task"] == "phone")]
    assert zero["value"].nunique() == 1 and len(zero) == 4
    spans = df[df["order"] == "span"]
    assert sorted(set(zip(spans["span"], spans["span_mode"]))) == [(1, "renorm"), (1, "zero"), (4, "renorm"),
                                                                  (4, "zero")]
    assert (df["forward_s_per_audio_s"] > 0).all() and df["attention_share"].between(0, 1).all()


def test_every_point_timed_k_times_interleaved(full):
    out, _, _ = full
    df = pd.read_csv(out / "curves.csv")
    for col in ("forward_s_per_audio_s_min", "forward_spread", "timing_rounds"):
        assert col in df.columns
    assert (df["timing_rounds"] == ROUNDS).all()
    assert (df["forward_s_per_audio_s_min"] > 0).all()
    assert (df["forward_s_per_audio_s_min"] <= df["forward_s_per_audio_s"]).all()
    assert (df["forward_spread"] >= 0).all()
    # one point, one timing: the tasks of a point share it, and the unpruned point is shared by every order
    per_point = df.groupby(["pruned_heads", "span", "span_mode"], dropna=False)[TIMING].nunique()
    assert (per_point == 1).all().all()
    zero = df[(df["n_pruned"] == 0) & (df["order"] != "span")]
    assert zero["forward_s_per_audio_s"].nunique() == 1
    # a point is its pruned set (orders reach one set in different orders), span and mode
    df["point"] = [";".join(sorted(str(p).split(";"))) if isinstance(p, str) else "" for p in df["pruned_heads"]]
    points = df.drop_duplicates(["point", "span", "span_mode"])
    assert (df.groupby(["point", "span", "span_mode"], dropna=False)[TIMING].nunique() == 1).all().all()
    t = json.loads((out / "summary.json").read_text())["timing"]
    assert t["rounds"] == ROUNDS and t["wide_spread"] == 0.2
    assert t["points"] == len(points)
    assert t["wide_points"] == int((points["forward_spread"] > 0.2).sum())


def test_kill_and_resume_equals_uninterrupted(tmp_path, full, speech_model):
    out_full, _, _ = full
    heads = tmp_path / "heads.csv"
    shutil.copy(out_full.parent / "given_heads.csv", heads)
    out = tmp_path / "killed"
    seen = []

    def kill_after_4(info):
        seen.append(info)
        if len(seen) == 4:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        rank(_config(out, heads_from=str(heads)), model=speech_model, on_point=kill_after_4, log=lambda s: None)
    assert not (out / "curves.csv").exists() and len(list((out / "points").glob("*.json"))) >= 3
    with pytest.raises(FileExistsError):
        rank(_config(out, heads_from=str(heads)), model=speech_model, log=lambda s: None)
    s = rank(_config(out, heads_from=str(heads), resume=True), model=speech_model, log=lambda s: None)
    assert s["points"]["reused_from_disk"] >= 3
    a = pd.read_csv(out / "curves.csv")
    b = pd.read_csv(out_full / "curves.csv")
    pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING))
    # every point done: a second resume recomputes nothing and rewrites the very same files
    before = {n: (out / n).read_bytes() for n in ("curves.csv", "fig5.svg", "fig6a.svg", "fig5.png", "fig6a.png")}
    s2 = rank(_config(out, heads_from=str(heads), resume=True), model=speech_model, log=lambda s: None)
    assert s2["points"]["computed_this_run"] == 0
    assert {n: (out / n).read_bytes() for n in before} == before


def test_default_timit_splits_skip_speaker_tasks(tmp_path, speech_model):
    # the fixture's TEST speaker (MKAL2) is not among the TRAIN speakers: closed-set speaker tasks skip
    s = rank(_config(tmp_path / "o", train_split="TRAIN", test_split="TEST", orders=["D"], step=4, spans=[],
                     tasks=["reconstruction", "phone", "speaker-frame", "speaker-utterance"]),
             model=speech_model, log=lambda s: None)
    assert s["tasks"] == ["phone"]
    assert "no test speaker appears in the train split" in s["skipped_tasks"]["speaker-frame"]
    assert "no test speaker appears in the train split" in s["skipped_tasks"]["speaker-utterance"]
    assert "pre-training head" in s["skipped_tasks"]["reconstruction"]
    assert (tmp_path / "o" / "heads.csv").exists()  # computed here
    assert set(pd.read_csv(tmp_path / "o" / "curves.csv")["task"]) == {"phone"}


def test_corpus_without_alignments_or_speakers(tmp_path, speech_model):
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(FIXTURE.rglob("*.WAV"))[:8]:
        shutil.copy(p, flat / f"{p.parent.name}_{p.stem}.wav")
    s = rank(_config(tmp_path / "o", corpus=str(flat), train_split="*[:0.5]", test_split="*[0.5:]", orders=["V"],
                     step=8, spans=[], train_seconds=None), model=speech_model, log=lambda s: None)
    assert s["tasks"] == []
    assert "no phone alignments" in s["skipped_tasks"]["phone"]
    assert "no speaker" in s["skipped_tasks"]["speaker-frame"]


def test_reconstruction_through_checkpoint_head(tmp_path, checkpoint):
    s = rank(_config(tmp_path / "o", model=str(checkpoint), orders=["G"], step=8, spans=[2], span_modes=["zero"],
                     tasks=["reconstruction"]), log=lambda s: None)
    assert s["model"]["pretraining_head"] and s["tasks"] == ["reconstruction"]
    df = pd.read_csv(tmp_path / "o" / "curves.csv")
    assert len(df) == 3 and (df["value"] > 0).all() and df["value"].nunique() == 3


def test_gradient_order_through_satkern_head_gates(tmp_path, speech_model):
    s = rank(_config(tmp_path / "o", orders=["gradient"], step=8, spans=[], tasks=["phone"]),
             model=speech_model, log=lambda s: None)
    imp = np.array(s["gradient"]["importance"])
    assert imp.shape == (2, 4) and (imp > 0).all() and "head_gates" in s["gradient"]["path"]
    order = [tuple(map(int, x.split(":"))) for x in s["orders"]["gradient"]["heads"]]
    assert [imp[l, h] for l, h in order] == sorted(imp.reshape(-1))


def test_gradient_importance_satkern_equals_eager_head_mask(speech_model, splits):
    """The satkern path (patch head gates, satkern's backward) against the s3prl model's eager attention with
    head_mask as the gates: the same I_h to float32 rounding."""
    from satkern.rank import RankSetup
    from satkern.rank.gradient import gradient_importance

    train, test = splits
    probe_setup = RankSetup(speech_model, train[:6], test[:3], tasks=["phone"], batch_seconds=6.0, probe_steps=50)
    fused = gradient_importance(probe_setup, path="satkern")
    eager = gradient_importance(probe_setup, path="eager")
    assert fused.shape == eager.shape == (2, 4) and (eager > 0).all()
    np.testing.assert_allclose(fused, eager, rtol=2e-3, atol=1e-6 * float(np.abs(eager).max()))
    with pytest.raises(ValueError, match="path must be one of"):
        gradient_importance(probe_setup, path="both")


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "satkern", "rank", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("extra, arg", [(["--by", "G,Q"], "--by"), (["--tasks", "phone,asr"], "--tasks"),
                                        (["--step", "0"], "--step"), (["--span", "1,-2"], "--span"),
                                        (["--span-mode", "wide"], "--span-mode"),
                                        (["--test-split", "TEST[0.5:0.2]"], "--test-split"),
                                        (["--timing-rounds", "0"], "--timing-rounds")])
def test_cli_bad_input_one_line(tmp_path, extra, arg):
    r = _cli("--model", MODEL, "--corpus", str(FIXTURE), "--out", str(tmp_path / "o"), *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and arg in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()  # refused before any work


def test_cli_heads_count_mismatch_refused(tmp_path):
    _heads_csv(tmp_path / "h.csv", L=3, H=4)
    r = _cli("--model", MODEL, "--corpus", str(FIXTURE), "--out", str(tmp_path / "o"), "--heads-from",
             str(tmp_path / "h.csv"), "--span", "", "--probe-steps", "5")
    assert r.returncode == 2 and "another model" in r.stderr and "Traceback" not in r.stderr, r.stderr

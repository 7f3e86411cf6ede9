"""The corpus job end to end on the fixture corpus: every output number against the eager reference,
bad files, kill-and-resume, batch-budget and order invariance."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from satkern.analysis import AnalyzeConfig, ResumeError, analyze
from satkern.corpus import resample
from satkern.metrics import categorize

from eager_reference import FIXTURE, MODEL, EagerReference, tiny_model

# float32 kernels and a padded batch against float64 statistics of per-utterance eager maps
ATOL = 1e-5
SUBSET = 12  # utterances (first by id) in the resume / invariance runs


def _cfg(out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("budget_seconds", 6.0)
    return AnalyzeConfig(model=MODEL, corpus=str(FIXTURE), out=str(out), **kw)


def _close(name, got, want, atol=ATOL):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{name}: NaN patterns differ"
    ok = ~np.isnan(want)
    err = np.abs(got[ok] - want[ok])
    worst = float(err.max()) if err.size else 0.0
    assert worst <= atol * (1 + 0), f"{name}: worst abs error {worst:.3g} > {atol}"


def _heads(out):
    return pd.read_csv(Path(out) / "heads.csv")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, model):
    out = tmp_path_factory.mktemp("full")
    summary = analyze(_cfg(out, per_utterance=True), model=model)
    return out, summary


def test_every_number_against_eager_maps(full_run, reference, model):
    out, summary = full_run
    ref = reference.corpus()
    df = _heads(out)
    L, H = ref["G"].shape
    assert list(df.columns) == ["layer", "head", "G", "V", "D", "W", "category", "n_utterances"]
    assert len(df) == L * H and df["layer"].tolist() == np.repeat(np.arange(L), H).tolist()
    for k in "GVDW":
        _close(k, df[k].to_numpy().reshape(L, H), ref[k])
    assert (df["n_utterances"] == len(reference.rows)).all()
    cats = categorize(torch.from_numpy(ref["G"]), torch.from_numpy(ref["V"]), torch.from_numpy(ref["D"]))
    assert df["category"].tolist() == cats
    # the heads differ (sharpened queries), so the check above is not trivially uniform
    assert df["G"].std() > 1e-2

    z = np.load(out / "prm.npz")
    assert z["labels"].tolist() == reference.labels
    # measured: P_counts 4e-9, P_base 1e-11, P*P_U 4e-9, P 5e-6, concentration 1.4e-6 (values up to ~0.9)
    _close("P_counts", z["P_counts"], ref["Pp"], atol=1e-7)
    _close("P_base", z["P_base"], ref["Pu"], atol=1e-9)
    # P divides by P_U (small for rare labels): compare relative to P_U
    Pu = ref["Pu"]
    _close("P*P_U", np.nan_to_num(z["P"]) * Pu, np.nan_to_num(ref["P"]) * Pu, atol=1e-7)
    _close("P", z["P"], ref["P"], atol=1e-4)
    assert np.array_equal(np.isnan(z["P"]), np.isnan(ref["P"]))
    _close("concentration", z["concentration"], ref["C"], atol=5e-5)
    assert np.nanmax(np.abs(ref["C"])) > 0.1  # concentration is not trivially ~0
    np.testing.assert_allclose(z["P_counts"].sum((-1, -2)), z["P_base"].sum(), rtol=1e-6)  # both sum to the labelled mass

    per = pd.read_parquet(out / "utterances.parquet")
    assert len(per) == len(reference.rows) * L * H
    for uid, g in per.groupby("utterance"):
        r = reference.rows[uid]
        for k in "GVDW":
            _close(f"{uid} {k}", g.sort_values(["layer", "head"])[k].to_numpy().reshape(L, H), r[k])
        assert abs(g["duration"].iloc[0] - r["duration"]) < 1e-9

    s = json.loads((out / "summary.json").read_text())
    assert s == json.loads(json.dumps(summary, default=str))
    assert s["counts"]["utterances_analyzed"] == len(reference.rows) and s["skipped"] == []
    assert s["model"]["random_weights"] is True
    assert abs(s["audio_hours"] * 3600 - sum(r["duration"] for r in reference.rows.values())) < 1e-6
    assert s["categories"] == {c: cats.count(c) for c in ("global", "vertical", "diagonal")}
    for key in ("elapsed_s", "throughput_audio_s_per_s", "device", "versions", "git_commit", "loader"):
        assert key in s
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporaries


def _family_check(tmp_path, name, budget, family="s3prl"):
    sm = tiny_model(name=name)
    ref_all = EagerReference(sm)
    n = 6
    s = analyze(AnalyzeConfig(model=name, corpus=str(FIXTURE), out=str(tmp_path), progress=False,
                              budget_seconds=budget, max_utterances=n), model=sm)
    assert s["model"]["family"] == family
    ref = ref_all.corpus(sorted(ref_all.rows)[:n])
    df = _heads(tmp_path)
    L, H = ref["G"].shape
    for k in "GVDW":
        _close(k, df[k].to_numpy().reshape(L, H), ref[k])
    assert df["G"].std() > 1e-2
    z = np.load(tmp_path / "prm.npz")
    sel = np.array([ref_all.labels.index(l) for l in z["labels"].tolist()])  # the subset's labels
    _close("P_counts", z["P_counts"], ref["Pp"][..., sel[:, None], sel[None, :]], atol=1e-7)
    _close("P_base", z["P_base"], ref["Pu"][sel[:, None], sel[None, :]], atol=1e-9)


def test_s3prl_family_against_eager_maps(tmp_path):
    """Mockingjay (s3prl family), one utterance per batch: every head metric and PRM sum."""
    _family_check(tmp_path, "tiny-mockingjay-base", budget=0.1)


def test_s3prl_family_batched(tmp_path):
    _family_check(tmp_path, "tiny-mockingjay-base", budget=5.0)


def test_fold_39_labels(tmp_path, model):
    analyze(_cfg(tmp_path, fold_39=True, max_utterances=4, stats=("entropy",)), model=model)
    z = np.load(tmp_path / "prm.npz")
    assert len(z["labels"]) == 39 and "sil" in z["labels"].tolist() and "h#" not in z["labels"].tolist()
    df = _heads(tmp_path)
    assert df["V"].isna().all() and df["G"].notna().all() and (df["category"].isna() | (df["category"] == "")).all()


def _bad_corpus(root: Path):
    """Three good utterances plus one of every kind of bad file."""
    src = sorted(FIXTURE.rglob("*.PHN"), key=lambda p: p.stat().st_size)[:3]
    spk = root / "TRAIN/DR1/MBAD0"
    spk.mkdir(parents=True)
    for i, p in enumerate(src):
        shutil.copy(p, spk / f"GOOD{i}.PHN")
        shutil.copy(p.with_suffix(".WAV"), spk / f"GOOD{i}.WAV")
    x, rate = sf.read(str(src[0].with_suffix(".WAV")), dtype="float32")
    phn = src[0].read_text()
    # NIST SPHERE copy: read and analyzed like its RIFF twin
    sf.write(str(spk / "SPHERE.WAV"), x, rate, format="NIST", subtype="PCM_16")
    (spk / "SPHERE.PHN").write_text(phn)
    # 8 kHz copy: resampled to 16 kHz, offsets scaled -> analyzed
    sf.write(str(spk / "RATE8K.WAV"), resample(x, 16000, 8000), 8000, subtype="PCM_16")
    (spk / "RATE8K.PHN").write_text("".join(f"{int(a) // 2} {int(b) // 2} {l}\n"
                                            for a, b, l in (ln.split() for ln in phn.splitlines())))
    # bad ones
    (spk / "CORRUPT.WAV").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    (spk / "CORRUPT.PHN").write_text(phn)
    sf.write(str(spk / "EMPTY.WAV"), np.zeros(0, np.float32), 16000)
    (spk / "EMPTY.PHN").write_text("0 10 h#\n")
    sf.write(str(spk / "ODDRATE.WAV"), x[:16001], 16001, subtype="PCM_16")
    (spk / "ODDRATE.PHN").write_text(phn)
    # two channels: down-mixed to mono -> analyzed
    sf.write(str(spk / "STEREO.WAV"), np.stack([x, 0.5 * x], axis=1), rate, subtype="PCM_16")
    (spk / "STEREO.PHN").write_text(phn)
    # no alignment in a corpus with alignments: analyzed, left out of the relation maps only
    sf.write(str(spk / "NOPHN.WAV"), x, 16000, subtype="PCM_16")
    sf.write(str(spk / "BADPHN.WAV"), x, 16000, subtype="PCM_16")
    (spk / "BADPHN.PHN").write_text("0 100 h#\nthis is not a phone line\n")
    sf.write(str(spk / "SHORT.WAV"), x[:200], 16000, subtype="PCM_16")
    (spk / "SHORT.PHN").write_text("0 200 h#\n")
    sf.write(str(spk / "UNKNOWN.WAV"), x, 16000, subtype="PCM_16")
    (spk / "UNKNOWN.PHN").write_text("0 100 h#\n100 200 xx\n")
    return spk


def test_bad_files_skipped_and_reported(tmp_path, model):
    corpus = tmp_path / "corpus"
    _bad_corpus(corpus)
    out = tmp_path / "out"
    s = analyze(AnalyzeConfig(model=MODEL, corpus=str(corpus), out=str(out), progress=False, fold_39=True,
                              per_utterance=True, budget_seconds=3.0), model=model)
    reasons = {Path(r["utterance"]).name: r["reason"] for r in s["skipped"]}
    assert set(reasons) == {"CORRUPT", "EMPTY", "ODDRATE", "BADPHN", "SHORT", "UNKNOWN"}, reasons
    assert "unreadable" in reasons["CORRUPT"]
    assert "empty" in reasons["EMPTY"]
    assert "cannot be converted" in reasons["ODDRATE"]
    assert "START END LABEL" in reasons["BADPHN"]
    assert "too short" in reasons["SHORT"] and "--min-seconds" in reasons["SHORT"]
    assert "no class in the phone folding" in reasons["UNKNOWN"]
    c = s["counts"]
    assert c["utterances_found"] == 13 and c["utterances_analyzed"] == 7 and c["utterances_skipped"] == 6
    assert c["utterances_in_prm"] == 6 and c["utterances_without_alignment"] == 1
    assert [Path(u).name for u in s["without_alignment"]] == ["NOPHN"]
    assert c["utterances_resampled"] == 1 and c["utterances_downmixed"] == 1
    conv = {Path(r["utterance"]).name: r for r in s["conversions"]}
    assert set(conv) == {"RATE8K", "STEREO"}
    assert conv["RATE8K"]["sample_rate"] == 8000 and conv["RATE8K"]["resampled"] and not conv["RATE8K"]["downmixed"]
    assert conv["STEREO"]["channels"] == 2 and conv["STEREO"]["downmixed"] and not conv["STEREO"]["resampled"]
    assert (_heads(out)["n_utterances"] == 7).all()
    assert not (out / "checkpoint").exists(), "the checkpoint folder outlived a successful run"
    per = pd.read_parquet(out / "utterances.parquet")
    a = per[per.utterance.str.endswith("GOOD0")].sort_values(["layer", "head"])
    b = per[per.utterance.str.endswith("SPHERE")].sort_values(["layer", "head"])
    c = per[per.utterance.str.endswith("RATE8K")].sort_values(["layer", "head"])
    _close("SPHERE vs RIFF", b[list("GVDW")].to_numpy(), a[list("GVDW")].to_numpy(), atol=1e-5)
    # the unaligned copy of GOOD0's audio has GOOD0's head metrics
    d = per[per.utterance.str.endswith("NOPHN")].sort_values(["layer", "head"])
    _close("NOPHN vs GOOD0", d[list("GVDW")].to_numpy(), a[list("GVDW")].to_numpy(), atol=1e-5)
    assert len(c) == len(a) and abs(c.duration.iloc[0] - a.duration.iloc[0]) < 1e-3
    json.loads((out / "summary.json").read_text())


class _Killed(RuntimeError):
    pass


def test_kill_and_resume_equals_uninterrupted(tmp_path, model, reference):
    whole = tmp_path / "whole"
    analyze(_cfg(whole, max_utterances=SUBSET, per_utterance=True, budget_seconds=3.0), model=model)

    out = tmp_path / "killed"
    first = []

    def kill_after_3(i, uids):
        first.extend(uids)
        if i == 2:
            raise _Killed()

    with pytest.raises(_Killed):
        analyze(_cfg(out, max_utterances=SUBSET, per_utterance=True, budget_seconds=3.0, checkpoint_batches=1),
                model=model, on_batch=kill_after_3)
    assert not (out / "heads.csv").exists() and (out / "checkpoint").exists()
    with pytest.raises(FileExistsError):  # a rerun without --resume must not silently start over
        analyze(_cfg(out, max_utterances=SUBSET), model=model)

    second = []
    s = analyze(_cfg(out, max_utterances=SUBSET, per_utterance=True, budget_seconds=3.0, resume=True,
                     keep_checkpoint=True), model=model, on_batch=lambda i, uids: second.extend(uids))
    assert first and second and not set(first) & set(second), "finished utterances were redone"
    assert sorted(first + second) == sorted(reference.rows)[:SUBSET]
    assert s["resumed"] and s["utterances_this_run"] == len(second)
    assert s["counts"]["utterances_analyzed"] == SUBSET

    a, b = _heads(whole), _heads(out)
    for k in "GVDW":
        _close(k, b[k], a[k], atol=1e-5)
    assert (a["category"] == b["category"]).all() and (a["n_utterances"] == b["n_utterances"]).all()
    za, zb = np.load(whole / "prm.npz"), np.load(out / "prm.npz")
    for k in ("P_counts", "P_base"):
        _close(k, zb[k], za[k], atol=1e-7)
    pa, pb = pd.read_parquet(whole / "utterances.parquet"), pd.read_parquet(out / "utterances.parquet")
    assert pa[["utterance", "layer", "head"]].equals(pb[["utterance", "layer", "head"]])
    _close("per-utterance", pb[list("GVDW")].to_numpy(), pa[list("GVDW")].to_numpy(), atol=1e-5)
    # against the eager maps too
    ref = reference.corpus(sorted(reference.rows)[:SUBSET])
    L, H = ref["G"].shape
    for k in "GVDW":
        _close(k, b[k].to_numpy().reshape(L, H), ref[k])

    # a checkpoint from another job is refused
    other = tiny_model(seed=5)
    with pytest.raises(ResumeError, match="different job"):
        analyze(_cfg(out, max_utterances=SUBSET, resume=True), model=other)


def test_budget_and_order_invariance(tmp_path, model, reference):
    outs = []
    for i, (budget, order) in enumerate(((1.0, "length"), (60.0, "shuffle"))):
        out = tmp_path / f"run{i}"
        analyze(_cfg(out, max_utterances=SUBSET, budget_seconds=budget, order=order, seed=3, workers=i),
                model=model)
        outs.append(out)
    a, b = _heads(outs[0]), _heads(outs[1])
    for k in "GVDW":
        _close(k, b[k], a[k], atol=1e-5)
    za, zb = np.load(outs[0] / "prm.npz"), np.load(outs[1] / "prm.npz")
    _close("P_counts", zb["P_counts"], za["P_counts"], atol=1e-7)
    ref = reference.corpus(sorted(reference.rows)[:SUBSET])
    L, H = ref["G"].shape
    _close("G", a["G"].to_numpy().reshape(L, H), ref["G"])


def test_sigkill_then_resume_cli(tmp_path):
    """A real kill (SIGKILL of the CLI process once a checkpoint exists), then --resume."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    base = [sys.executable, "-m", "satkern", "analyze", "--model", MODEL, "--corpus", str(FIXTURE), "--max-utterances",
            "8", "--budget-seconds", "1", "--checkpoint-seconds", "0", "--no-progress"]
    whole, out = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(base + ["--out", str(whole)], env=env, check=True, capture_output=True, timeout=240)
    p = subprocess.Popen(base + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = out / "checkpoint" / "rank0-of-1.pt"
    t0 = time.time()
    while not ck.exists() and p.poll() is None and time.time() - t0 < 200:
        time.sleep(0.05)
    killed = p.poll() is None
    if killed:
        os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    r = subprocess.run(base + ["--out", str(out), "--resume"], env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["counts"]["utterances_analyzed"] == 8
    if killed:
        assert s["resumed"] and s["utterances_this_run"] < 8
    a, b = _heads(whole), _heads(out)
    for k in "GVDW":
        _close(k, b[k], a[k], atol=1e-6)
    _close("P_counts", np.load(out / "prm.npz")["P_counts"], np.load(whole / "prm.npz")["P_counts"], atol=1e-8)


def test_demo_command_prints_summary_categories_and_outputs(tmp_path, capsys):
    from satkern.cli import main

    rc = main(["demo", "--model", MODEL, "--max-utterances", "3", "--out", str(tmp_path / "demo"), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in text
    assert "layer  head" not in text  # the per-head table is in heads.csv, not on the screen
    m = json.loads((tmp_path / "demo" / "analyze" / "summary.json").read_text())["model"]
    assert f"per-head table ({m['layers'] * m['heads']} heads: layer, head, G, V, D, W, category): " \
           f"{tmp_path / 'demo' / 'analyze' / 'heads.csv'}" in text
    assert "most global: layer " in text and "most vertical: layer " in text and "most diagonal: layer " in text
    assert "categories: global" in text
    assert (f"outputs in {tmp_path / 'demo' / 'analyze'}/: head_maps.npz, heads.csv, maps.npz, prm.npz, "
            f"summary.json, utterances.parquet") in text
    report = tmp_path / "demo" / "report.html"
    assert f"report at {report.resolve()}" in text and report.stat().st_size < 8e6
    # a second demo run overwrites the first
    assert main(["demo", "--model", MODEL, "--max-utterances", "2", "--out", str(tmp_path / "demo"),
                 "--no-progress", "--maps", "0"]) == 0
    assert not (tmp_path / "demo" / "analyze" / "maps.npz").exists()


def _textgrid(segments, rate, total):
    """Long-format TextGrid with a words tier and an MFA-style phones tier (times in seconds)."""
    iv = "".join(f'            intervals [{i + 1}]:\n                xmin = {a / rate!r}\n                xmax = {b / rate!r}\n'
                 f'                text = "{lab}"\n' for i, (a, b, lab) in enumerate(segments))
    end = total / rate
    return (f'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = {end!r}\ntiers? <exists>\n'
            f'size = 2\nitem []:\n    item [1]:\n        class = "IntervalTier"\n        name = "words"\n'
            f'        xmin = 0\n        xmax = {end!r}\n        intervals: size = 1\n        intervals [1]:\n'
            f'            xmin = 0\n            xmax = {end!r}\n            text = "hello"\n'
            f'    item [2]:\n        class = "IntervalTier"\n        name = "phones"\n        xmin = 0\n'
            f'        xmax = {end!r}\n        intervals: size = {len(segments)}\n' + iv)


def test_librispeech_with_mfa_textgrids_equals_timit_layout(tmp_path, model):
    """The same audio and phone segments as a LibriSpeech tree (FLAC + TextGrids in a separate
    alignment folder) and as a TIMIT tree give the same analysis."""
    from eager_reference import read_phn

    src = sorted(FIXTURE.rglob("*.PHN"))[:3]
    timit, libri, mfa = tmp_path / "timit", tmp_path / "libri" / "dev-clean", tmp_path / "mfa"
    for i, p in enumerate(src):
        x, rate = sf.read(str(p.with_suffix(".WAV")), dtype="int16")
        uid = f"19-198-{i:04d}"
        (timit / "TEST/DR1/SPK19").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, timit / f"TEST/DR1/SPK19/{uid}.PHN")
        shutil.copy(p.with_suffix(".WAV"), timit / f"TEST/DR1/SPK19/{uid}.WAV")
        (libri / "19/198").mkdir(parents=True, exist_ok=True)
        sf.write(str(libri / f"19/198/{uid}.flac"), x, rate, format="FLAC", subtype="PCM_16")
        (mfa / "19").mkdir(parents=True, exist_ok=True)
        (mfa / "19" / f"{uid}.TextGrid").write_text(_textgrid(read_phn(p), rate, len(x)))
    (libri / "19/198/19-198.trans.txt").write_text("".join(f"19-198-{i:04d} HELLO\n" for i in range(3)))
    sa = analyze(AnalyzeConfig(model=MODEL, corpus=str(timit), out=str(tmp_path / "o1"), progress=False,
                               fold_39=True), model=model)
    sb = analyze(AnalyzeConfig(model=MODEL, corpus=str(tmp_path / "libri"), out=str(tmp_path / "o2"),
                               progress=False, fold_39=True, alignments=str(mfa)), model=model)
    assert sa["corpus"]["layout"] == "timit" and sb["corpus"]["layout"] == "librispeech"
    assert sb["counts"]["utterances_in_prm"] == 3 and not sb["skipped"]
    a, b = _heads(tmp_path / "o1"), _heads(tmp_path / "o2")
    for k in "GVDW":
        _close(k, b[k], a[k], atol=1e-6)
    za, zb = np.load(tmp_path / "o1" / "prm.npz"), np.load(tmp_path / "o2" / "prm.npz")
    assert za["labels"].tolist() == zb["labels"].tolist()
    _close("P_base", zb["P_base"], za["P_base"], atol=1e-12)
    _close("P_counts", zb["P_counts"], za["P_counts"], atol=1e-8)


def test_group_norm_model_batched_against_eager_maps(tmp_path):
    """HuBERT-base-style GroupNorm front end in padded batches: equal to each utterance run alone."""
    _family_check(tmp_path, "tiny-hubert-base", budget=5.0, family="hf")

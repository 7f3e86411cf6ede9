"""The corpus-job runner: every job's summary.json has the same keys and shapes for what the runner owns
(version, kind, model, corpus, device, backend, versions, commit, skipped); the --out guard, discovery
skips and the summary's own checks."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from satkern.jobs import CorpusJob, CorpusJobConfig

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
MODEL = "tiny-mockingjay-base"
SPEAKER = "TRAIN/DR1/MKAL0"
BROKEN = f"{SPEAKER}/SX009"  # written as a file that is no audio: every job must list it in "skipped"
MODEL_KEYS = {"spec": str, "name": str, "family": str, "random_weights": bool, "sample_rate": int,
              "frame_stride": int, "layers": int, "heads": int, "weights_checksum": str}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six aligned utterances of one TIMIT speaker and one unreadable file."""
    root = tmp_path_factory.mktemp("corpus")
    spk = root / SPEAKER
    spk.mkdir(parents=True)
    for n in range(1, 7):
        for ext in ("WAV", "PHN", "TXT"):
            shutil.copy(FIXTURE / SPEAKER / f"SX00{n}.{ext}", spk / f"SX00{n}.{ext}")
    (spk / "SX009.WAV").write_bytes(b"RIFF but not a wave file")
    shutil.copy(FIXTURE / SPEAKER / "SX009.PHN", spk / "SX009.PHN")
    return root


@pytest.fixture(scope="module")
def summaries(corpus, tmp_path_factory):
    """summary.json of analyze, segment and rank over the same corpus and model (read back from disk)."""
    from satkern.analysis import AnalyzeConfig, analyze
    from satkern.rank import RankConfig, rank
    from satkern.segment.job import SegmentConfig, segment_corpus

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    quiet = dict(log=lambda s: None)
    common = dict(model=MODEL, corpus=str(corpus), progress=False)
    try:
        analyze(AnalyzeConfig(out=str(root / "analyze"), **common), **quiet)
        segment_corpus(SegmentConfig(out=str(root / "segment"), features=("attention",), heads="0:1", tune_on=1,
                                     alpha_grid=(0.01,), beta_grid=(1.0,), pr_betas=(1.0,), textgrids=False,
                                     **common), **quiet)
        rank(RankConfig(out=str(root / "rank"), orders=["G"], step=8, spans=[], tasks=["phone"],
                        train_split=f"{SPEAKER.split('/')[0]}[:0.5]", test_split=f"{SPEAKER.split('/')[0]}[0.5:]",
                        probe_steps=5, timing_seconds=1.0, **common), **quiet)
    finally:
        torch.set_num_threads(threads)
    return {kind: json.loads((root / kind / "summary.json").read_text()) for kind in ("analyze", "segment", "rank")}


def test_every_job_writes_the_shared_keys_in_the_same_shapes(summaries):
    for kind, s in summaries.items():
        assert s["version"] == 1 and s["kind"] == kind, kind
        for key, typ in MODEL_KEYS.items():
            assert isinstance(s["model"].get(key), typ), (kind, key, s["model"].get(key))
        assert s["model"]["spec"] == MODEL and s["model"]["family"] == "s3prl" and s["model"]["random_weights"]
        assert (s["model"]["layers"], s["model"]["heads"]) == (2, 4)
        assert isinstance(s["corpus"]["path"], str) and s["corpus"]["layout"] == "timit", kind
        assert isinstance(s["device"], str) and s["device"].startswith("cpu"), (kind, s["device"])
        assert set(s["backend"]) == {"requested", "used"}, (kind, s["backend"])
        assert s["backend"]["requested"] == "auto"
        # what ran, not what was asked for: on a CPU the patched layers run the cpu backend
        assert s["backend"]["used"] == ["cpu"], (kind, s["backend"])
        assert isinstance(s["versions"], dict) and {"python", "torch", "numpy"} <= set(s["versions"]), kind
        assert s["commit"] is None or isinstance(s["commit"], str), kind
        assert isinstance(s["skipped"], list) and s["skipped"], kind
        for rec in s["skipped"]:
            assert set(rec) == {"utterance", "path", "reason"} and all(isinstance(v, str) for v in rec.values())
        assert [r["utterance"] for r in s["skipped"]] == [BROKEN], (kind, s["skipped"])


def test_the_jobs_agree_on_what_they_share(summaries):
    """One model (same seed) and one corpus: the runner's records are equal across the jobs."""
    a, seg, r = summaries["analyze"], summaries["segment"], summaries["rank"]
    shared = ("spec", "name", "family", "random_weights", "sample_rate", "frame_stride", "layers", "heads",
              "weights_checksum")
    for other in (seg, r):
        assert {k: other["model"][k] for k in shared} == {k: a["model"][k] for k in shared}
        assert other["corpus"]["path"] == a["corpus"]["path"] and other["versions"] == a["versions"]
        assert other["skipped"] == a["skipped"]


def _job(tmp_path, **kw):
    return CorpusJob(CorpusJobConfig(model=MODEL, corpus=str(FIXTURE), out=str(tmp_path / "out"), **kw), "segment",
                     log=lambda s: None)


def test_previous_run_refused_unless_asked(tmp_path):
    job = _job(tmp_path)
    job.refuse_previous_run(["summary.json"])  # no folder yet: nothing to refuse
    (tmp_path / "out" / "points").mkdir(parents=True)
    job.refuse_previous_run(["summary.json", "points/*.json"])  # an empty folder is no previous run
    (tmp_path / "out" / "points" / "a.json").write_text("{}")
    with pytest.raises(FileExistsError, match="holds a previous run; pass --resume to continue it or --overwrite"):
        job.refuse_previous_run(["summary.json", "points/*.json"])
    with pytest.raises(FileExistsError, match="pass --overwrite to replace it"):
        job.refuse_previous_run(["points/*.json"], resumable=False)
    job.refuse_previous_run(["points/*.json"], resume=True)
    _job(tmp_path, overwrite=True).refuse_previous_run(["points/*.json"])


def test_prepare_folder_removes_stale_outputs_but_keeps_inputs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("summary.json", "heads.csv", "notes.txt"):
        (out / name).write_text("old")
    job = _job(tmp_path)
    job.prepare_folder(["summary.json", "heads.csv"], keep=[out / "heads.csv"])
    assert sorted(p.name for p in out.iterdir()) == ["heads.csv", "notes.txt"] and not job.created_out
    job.prepare_folder(["heads.csv"], resume=True)
    assert (out / "heads.csv").exists()


def test_undo_folder_removes_only_what_the_job_made(tmp_path):
    job = _job(tmp_path)
    job.prepare_folder()
    (job.out / "checkpoint").mkdir()
    job.undo_folder([job.out / "checkpoint"])
    assert not job.out.exists()
    kept = _job(tmp_path)
    kept.out.mkdir()
    kept.prepare_folder()
    kept.undo_folder()
    assert kept.out.is_dir()  # it existed before the job


def test_discovery_skips_with_reasons_and_an_error_that_lists_them(tmp_path):
    job = _job(tmp_path)
    corpus = job.discover(max_utterances=3, min_seconds=100.0)  # every fixture clip is shorter than 100 s
    assert corpus.utterances == [] and job.utterances_found == 30
    assert len(job.skipped) == 3 and all("--min-seconds" in s["reason"] for s in job.skipped)
    job.skip(job.skipped[0]["utterance"], "elsewhere", "another reason")  # a file is reported once
    assert len(job.skipped) == 3
    err = str(job.nothing_usable())
    assert "none of its 30 utterances could be segmented; skipped: 1 x too short" in err and "other reasons" not in err


def test_summary_refuses_task_keys_that_are_the_runners(tmp_path):
    from satkern.models import load_model

    job = _job(tmp_path)
    job.preflight()
    job.discover(max_utterances=1)
    torch.manual_seed(0)
    job.load_model(load_model(MODEL), meaning="")
    with pytest.raises(ValueError, match="'skipped'"):
        job.summary(skipped=[])
    s = job.summary(model={"extra": 1}, corpus={"labels": []}, counts={})
    assert s["model"]["extra"] == 1 and s["model"]["layers"] == 2 and s["corpus"]["labels"] == [] and s["counts"] == {}

"""``torchrun --nproc-per-node 2 -m satkern analyze`` (gloo, CPU) equals the single-process run."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import FIXTURE, MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = 10  # utterances


def _run(cmd, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-5000:]}"
    return r


def test_two_process_gloo_equals_single(tmp_path):
    args = ["analyze", "--model", MODEL, "--corpus", str(FIXTURE), "--max-utterances", str(N),
            "--budget-seconds", "4", "--per-utterance", "--no-progress", "--fold-39"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    _run([sys.executable, "-m", "satkern", *args, "--out", str(single)])
    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              "-m", "satkern", *args, "--out", str(multi)])
    assert "RANDOM WEIGHTS" in r.stdout + r.stderr

    s1 = json.loads((single / "summary.json").read_text())
    s2 = json.loads((multi / "summary.json").read_text())
    assert s2["processes"] == 2 and s1["processes"] == 1
    assert s1["model"]["weights_checksum"] == s2["model"]["weights_checksum"]
    assert s1["counts"] == s2["counts"] and s1["counts"]["utterances_analyzed"] == N
    assert abs(s1["audio_hours"] - s2["audio_hours"]) < 1e-12

    a, b = pd.read_csv(single / "heads.csv"), pd.read_csv(multi / "heads.csv")
    for k in "GVDW":
        err = np.abs(a[k] - b[k]).max()
        assert err < 1e-6, f"{k}: worst abs error {err:.3g}"
    assert (a["category"] == b["category"]).all() and (a["n_utterances"] == b["n_utterances"]).all()
    za, zb = np.load(single / "prm.npz"), np.load(multi / "prm.npz")
    assert za["labels"].tolist() == zb["labels"].tolist()
    for k in ("P_counts", "P_base"):
        np.testing.assert_allclose(zb[k], za[k], rtol=1e-6, atol=1e-9, err_msg=k)
    for k in ("P", "concentration"):  # (P' - P_U) / P_U: float32 rounding of P' divided by small P_U
        np.testing.assert_allclose(zb[k], za[k], rtol=0, atol=1e-6, err_msg=k)
    pa, pb = pd.read_parquet(single / "utterances.parquet"), pd.read_parquet(multi / "utterances.parquet")
    assert pa[["utterance", "layer", "head"]].equals(pb[["utterance", "layer", "head"]])
    assert np.abs(pa[list("GVDW")].to_numpy() - pb[list("GVDW")].to_numpy()).max() < 1e-6

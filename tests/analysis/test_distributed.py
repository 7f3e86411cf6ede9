"""``torchrun --nproc-per-node 2 -m satkern analyze`` (gloo, CPU) equals the single-process run,
also when the workers are killed mid-run and the job is resumed."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from eager_reference import FIXTURE, MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = 10  # utterances
ARGS = ["analyze", "--model", MODEL, "--corpus", str(FIXTURE), "--max-utterances", str(N), "--budget-seconds", "2",
        "--per-utterance", "--no-progress", "--fold-39", "--checkpoint-seconds", "0"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "satkern"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _run(cmd, timeout=240):
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-5000:]}"
    return r


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    _run([sys.executable, "-m", "satkern", *ARGS, "--out", str(out)])
    return out


def _same(single, multi, processes=2):
    s1 = json.loads((single / "summary.json").read_text())
    s2 = json.loads((multi / "summary.json").read_text())
    assert s2["processes"] == processes and s1["processes"] == 1
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
    return s2


def test_two_process_gloo_equals_single(tmp_path, single):
    multi = tmp_path / "multi"
    r = _run([*TORCHRUN, *ARGS, "--out", str(multi)])
    assert "RANDOM WEIGHTS" in r.stdout + r.stderr
    _same(single, multi)


def test_two_process_killed_then_resumed_equals_single(tmp_path, single):
    multi = tmp_path / "multi"
    p = subprocess.Popen([*TORCHRUN, *ARGS, "--out", str(multi)], cwd=ROOT, env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not list((multi / "checkpoint").glob("rank*.pt")) and p.poll() is None and time.time() - t0 < 200:
        time.sleep(0.005)
    # SIGKILL the workers (torchrun's children, processes this test started) and then torchrun itself
    kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout.split()
    for pid in kids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    killed_early = not (multi / "heads.csv").exists()
    _run([*TORCHRUN, *ARGS, "--out", str(multi), "--resume"])
    s = _same(single, multi)
    assert s["resumed"]
    if killed_early:
        assert s["utterances_this_run"] < N

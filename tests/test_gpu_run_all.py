"""CI checks of tests/gpu/run_all.sh (the one-script GPU check) on a machine without a GPU: it parses, its
--dry-run checks every script and module it would call plus its results bookkeeping, and a real run without
a CUDA device skips cleanly (exit 0, nothing written)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "gpu", "run_all.sh")


def _run(*args, **env):
    e = dict(os.environ, PYTHON=sys.executable, **env)
    return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)


def test_parses():
    r = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_dry_run_checks_the_plan(tmp_path):
    r = _run("--dry-run", SATKERN_GPU_RESULTS=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    for step in ("build", "cuda", "triton", "sanitize", "bench_triton", "bench_flex", "bench_cuda", "aot"):
        assert f"[{step}]" in r.stdout
    flex = next(ln for ln in r.stdout.splitlines() if "[bench_flex]" in ln)
    assert "--modes composite" in flex and "8192" in flex  # issue 22: the composite at the longest T
    assert "gpu_report self-test: ok" in r.stdout and "nothing run" in r.stdout
    limit = int(r.stdout.split("at most ")[1].split("s")[0])
    assert limit <= 600, f"the steps' limits add up to {limit}s, more than the 10 minutes the check must fit"
    assert not os.listdir(tmp_path)  # a dry run writes no results


def test_without_a_gpu_it_skips_cleanly(tmp_path):
    r = _run(SATKERN_GPU_RESULTS=str(tmp_path), CUDA_VISIBLE_DEVICES="")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SKIPPED" in r.stdout
    assert not os.listdir(tmp_path)


def test_unknown_argument_is_one_clear_line():
    r = _run("--fast")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--fast" in r.stderr


def test_dry_run_refuses_a_bench_step_with_arguments_its_script_rejects(tmp_path):
    # a copy of the script whose bench_flex step asks for a mode bench_triton.py does not have
    text = open(SCRIPT).read().replace("--modes composite", "--modes compost")
    assert "--modes compost" in text
    bad = os.path.join(ROOT, "tests", "gpu", f"run_all_bad_{os.getpid()}.sh")
    with open(bad, "w") as f:
        f.write(text)
    try:
        e = dict(os.environ, PYTHON=sys.executable, SATKERN_GPU_RESULTS=str(tmp_path))
        r = subprocess.run(["bash", bad, "--dry-run"], cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)
    finally:
        os.remove(bad)
    assert r.returncode == 1 and "[bench_flex] arguments refused" in r.stderr and "compost" in r.stderr, r.stderr

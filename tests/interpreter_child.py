"""Running a test file again in a child pytest under the Triton interpreter.

TRITON_INTERPRET must be set before Triton kernels are decorated, so a file that tests kernels on the
CPU defines, in a normal run, one test that calls :func:`run_in_interpreter` on itself; in the child
(where :data:`IN_CHILD` is true) it defines the real cases. Other test files of the parent process are
never affected.
"""
import importlib.util
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_CHILD = os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


def triton_missing() -> bool:
    return importlib.util.find_spec("triton") is None


def run_in_interpreter(test_file: str, *pytest_args: str, timeout: int = 900) -> None:
    """``pytest test_file`` in a child process with TRITON_INTERPRET=1; fails with the child's output."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args, os.path.abspath(test_file)]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    print(r.stdout[-6000:])
    assert r.returncode == 0, (f"interpreter suite failed (rc {r.returncode}):\n{r.stdout[-12000:]}\n"
                               f"{r.stderr[-3000:]}")

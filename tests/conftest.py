"""Fixtures shared by several test folders."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (tiny shapes run fastest so on the shared 2-core CI machine, and
    results that must be bit-equal to a child process's need the child's OMP_NUM_THREADS=1); restored
    afterwards. Use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def child_python_ok():
    """``run(code, env, timeout)``: run ``code`` in a fresh Python with this checkout on PYTHONPATH and
    ``env`` added to the environment (e.g. ``SATKERN_CPU_NO_AVX2=1``, read once when the extension
    loads, so it needs its own process); the child must exit 0 and print exactly ``ok``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def run(code: str, env: dict, timeout: float = 120) -> None:
        r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(root), **env),
                           capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]

    return run

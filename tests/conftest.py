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

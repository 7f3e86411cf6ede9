"""Every Python block of README.md and docs/*.md runs as written.

Each ```python block runs on its own (a fresh namespace, in a temporary working directory), so
every block must be complete: imports, inputs and all. A block that cannot run here is marked
by an HTML comment on the line(s) just above it, which the rendered page does not show:

    <!-- skip-test: needs a GPU -->

The reason after ``skip-test:`` is the reason pytest reports (``-rs``). A block marked
``needs a GPU`` runs where CUDA is available. Keep blocks small (tiny models, short inputs):
this test runs in CI on a CPU.
"""
import os
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*skip-test:\s*(.*?)\s*-->\s*$")
GPU_REASON = "needs a GPU"


def python_blocks(path: Path):
    """``(line number, code, skip reason or None)`` of every python block of a markdown file."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        start = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").splitlines()
        reason = None
        if before:
            hit = SKIP.search(before[-1])
            if hit:
                reason = hit.group(1) or "marked skip-test"
        out.append((start, m.group(1), reason))
    return out


CASES = [pytest.param(path, line, code, reason, id=f"{path.relative_to(ROOT)}:{line}")
         for path in DOCS for line, code, reason in python_blocks(path)]


def test_the_docs_have_python_blocks():
    assert any(p == ROOT / "README.md" for p, *_ in (c.values for c in CASES)), "README.md has no python block"


def test_marker_parsing(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n<!-- skip-test: needs a GPU -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n")
    blocks = python_blocks(md)
    assert [(b[1], b[2]) for b in blocks] == [("x = 1\n", GPU_REASON), ("y = 2\n", None)]


@pytest.mark.parametrize("path, line, code, reason", CASES)
def test_block_runs_as_written(path, line, code, reason, tmp_path, monkeypatch):
    if reason is not None and not (reason == GPU_REASON and torch.cuda.is_available()):
        pytest.skip(f"{path.name}:{line}: {reason}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    namespace = {"__name__": f"doc_block_{path.stem}_{line}"}
    try:
        exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
    except Exception as e:
        raise AssertionError(f"the python block at {path.relative_to(ROOT)} line {line} fails as written: "
                             f"{type(e).__name__}: {e}") from e
    finally:
        os.chdir(ROOT)

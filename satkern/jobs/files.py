"""Atomic file writes for every job's outputs (and the report): a temporary file beside the target,
fsynced, then ``os.replace`` and the folder fsynced, so a killed job never leaves a half-written file
under an output's name (nor, when the write itself fails, the temporary file)."""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path, write) -> None:
    """Write ``path`` atomically: ``write(f)`` fills a binary file object opened on a temporary name
    beside ``path`` (``.<name>.tmp-<pid>``, which no reader takes for an output), which is fsynced and
    renamed over ``path``; the folder is then fsynced. A kill at any moment leaves either the old file or
    the whole new one under ``path``; a failed write leaves no temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_folder(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def fsync_folder(folder) -> None:
    """Make a rename in ``folder`` durable (POSIX: fsync the directory); best effort, a no-op where
    directories cannot be opened (Windows)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_out_dir(path, *, arg: str = "--out") -> Path:
    """``path`` as a :class:`~pathlib.Path` when it can be an output folder: a folder, or not there yet. A
    file at ``path`` or at one of the folders above it is refused with one line naming ``arg``
    (``ValueError``), before any work, instead of an ``[Errno 17]`` / ``[Errno 20]`` from ``mkdir`` later."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise ValueError(f"{arg}: {q} is a file; expected a directory")
            break
    return p

"""Checks every corpus job makes before it touches the model or the output folder.

Each check raises ``ValueError`` with one line that names the argument, what is wrong and
what to do instead; :mod:`satkern.cli` prints that line (no traceback) and exits 2.
"""
from __future__ import annotations

import torch

from ..ops import BackendUnavailable, availability, backends


def resolve_device(spec: str, *, argument: str = "--device") -> torch.device:
    """``torch.device`` for ``spec`` (``cpu``, ``cuda``, ``cuda:N``), refusing what cannot run here."""
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"argument {argument}: {spec!r} is not a device; expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(f"argument {argument} {spec}: torch {torch.__version__} is a CPU-only build, so CUDA "
                             f"cannot be used; pass --device cpu (or install a CUDA build of torch)")
        if not torch.cuda.is_available():
            raise ValueError(f"argument {argument} {spec}: no CUDA GPU is visible on this machine; "
                             f"pass --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"argument {argument} {spec}: this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif device.type != "cpu":
        raise ValueError(f"argument {argument}: device type {device.type!r} is not supported; expected cpu, "
                         f"cuda or cuda:N")
    return device


def check_backend(name: str, device: torch.device, *, argument: str = "--backend") -> None:
    """Refuse a backend that is unknown or cannot run float32 attention on ``device`` at all
    (not built, wrong device); per-call limits (head dim, dtype) are reported by
    :func:`backend_error` when the first batch meets them."""
    if name == "auto":
        return
    known = sorted(backends())
    if name not in known:
        raise ValueError(f"argument {argument}: {name!r} is not a backend; expected auto or one of {', '.join(known)}")
    state = availability(str(device)).get(name, "available")
    if state != "available":
        raise ValueError(f"argument {argument} {name}: cannot run on {device}: {state}; "
                         f"pass --backend auto (it picks one that runs here)")


def backend_error(name: str, error: BackendUnavailable, *, argument: str = "--backend") -> ValueError:
    """A ``BackendUnavailable`` met while running the model, as one line naming the argument."""
    why = " ".join(str(error).split())  # one line
    return ValueError(f"argument {argument} {name}: {why}; pass --backend auto (it picks one that runs here)")

"""Where a run's numbers came from: versions, commit, device, and a fingerprint of the weights.

Every job that writes a ``summary.json`` (analyze, segment, rank) records these, so a result can be
traced to the code, the libraries and the machine that produced it.
"""
from __future__ import annotations

import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import torch


def git_commit() -> Optional[str]:
    root = Path(__file__).resolve().parents[1]
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except Exception:
        return None


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("satkern", "transformers", "soundfile", "scipy", "pandas"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


def weights_checksum(model: torch.nn.Module) -> str:
    """A cheap fingerprint of the weights (a resumed run must use the same model): per tensor, its
    shape and 1024 evenly strided values (hashing all of hubert-base's 95M weights costs seconds)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            if torch.is_tensor(p) and p.numel():
                flat = p.detach().reshape(-1)
                picks = flat[:: max(1, flat.numel() // 1024)][:1024].to("cpu", torch.float64)
                h.update(f"{name}:{tuple(p.shape)}:".encode() + picks.numpy().tobytes())
    return h.hexdigest()[:16]


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

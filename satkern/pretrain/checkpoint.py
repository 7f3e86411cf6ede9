"""Pre-training checkpoints in the layout of s3prl's pre-training runner.

``torch.save`` of a dict with, as s3prl's ``pretrain/runner.py`` + Mockingjay's ``UpstreamPretrainExpert``
write it:

* ``Transformer``: the state dict of the transformer (no prefix); ``SpecHead``: the head's;
* ``Upstream_Config``: ``{"transformer": {...}, "task": {...}, "audio": {...}}`` (s3prl's keys);
* ``Config``: the runner's settings (here: satkern's pre-training options);
* ``Step``: optimizer steps taken; ``Optimizer``: the AdamW state dict;
* ``Satkern_Resume`` (satkern's addition, ignored by s3prl): RNG states and data position, so
  ``--resume`` continues bit for bit.

Everything is tensors and plain containers, so the file loads with ``torch.load(weights_only=True)``.
Files are written atomically (temp file in the same folder, then ``os.replace``).
:func:`ship_checkpoint` strips a checkpoint to float16 weights + configs (no optimizer, no RNG).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Optional

import torch

CHECKPOINT_RE = re.compile(r"^states-(\d+)\.ckpt$")


def checkpoint_name(step: int) -> str:
    return f"states-{int(step)}.ckpt"  # s3prl's naming


def atomic_save(obj: Any, path) -> None:
    """``torch.save`` through :func:`satkern.jobs.files.atomic_write` (a temporary name that
    :func:`latest_checkpoint` never picks, fsynced, renamed): a kill at any moment leaves either the old
    file or the whole new one under ``path``, never a torn checkpoint that ``--resume`` would trust."""
    from ..jobs.files import atomic_write

    atomic_write(path, lambda f: torch.save(obj, f))


def latest_checkpoint(folder) -> Optional[Path]:
    """The ``states-<step>.ckpt`` with the largest step in ``folder``, or None."""
    best, best_step = None, -1
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for f in folder.iterdir():
        m = CHECKPOINT_RE.match(f.name)
        if m and int(m.group(1)) > best_step:
            best, best_step = f, int(m.group(1))
    return best


def prune_checkpoints(folder, keep: int) -> None:
    """Delete all but the ``keep`` newest ``states-*.ckpt``."""
    found = sorted((int(m.group(1)), f) for f in Path(folder).iterdir() if (m := CHECKPOINT_RE.match(f.name)))
    for _, f in found[:-keep] if keep > 0 else []:
        f.unlink()


def ship_checkpoint(states: Dict[str, Any], dtype: torch.dtype = torch.float16) -> Dict[str, Any]:
    """A distributable copy: ``Transformer`` and ``SpecHead`` in ``dtype``, configs and ``Step``;
    no ``Optimizer``, no resume state. satkern's loader restores float32."""
    def cast(sd):
        return {k: (v.detach().to(dtype).clone() if v.is_floating_point() else v.clone()) for k, v in sd.items()}

    return {"Transformer": cast(states["Transformer"]), "SpecHead": cast(states["SpecHead"]),
            "Upstream_Config": states["Upstream_Config"], "Config": states.get("Config", {}),
            "Step": states.get("Step")}

"""satkern's own trained SATs, shipped inside the package (``satkern/models/weights/``).

``sat-mini-m3``, ``sat-mini-m6``, ``sat-mini-m9``: small Mockingjay models pre-trained by
``satkern pretrain`` on satkern's synthetic corpus with consecutive masking C = 3, 6, 9 (the
paper's M3, M6, M9); identical otherwise. See docs/models.md (the model card). The files are
s3prl-layout checkpoints with float16 ``Transformer`` and ``SpecHead`` weights (no optimizer);
satkern's loader restores float32. They load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: name -> file in WEIGHTS_DIR
TRAINED_MODELS: Dict[str, str] = {
    "sat-mini-m3": "sat-mini-m3.pt",
}

#: the recorded reference numbers of the shipped checkpoints (see tests/models/test_trained.py)
RECORDED_METRICS = WEIGHTS_DIR / "sat-mini.json"


def trained_names() -> List[str]:
    return sorted(TRAINED_MODELS)


def is_trained_name(name: str) -> bool:
    return name in TRAINED_MODELS


def trained_path(name: str) -> Path:
    """The checkpoint file of a shipped model name."""
    if name not in TRAINED_MODELS:
        raise ValueError(f"unknown trained model {name!r}; shipped: {', '.join(trained_names())}")
    path = WEIGHTS_DIR / TRAINED_MODELS[name]
    if not path.is_file():
        raise FileNotFoundError(f"trained model {name!r}: its weights {path} are missing from this install")
    return path


def load_trained(name: str):
    """The eval-mode :class:`~satkern.models.s3prl.S3prlTransformer` of a shipped name (float32,
    ``random_weights`` False), loaded safely (weights_only)."""
    from .s3prl import load_s3prl_checkpoint

    model = load_s3prl_checkpoint(trained_path(name))
    model.name = name
    return model

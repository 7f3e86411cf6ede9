"""Helpers of the ranking tests (constants, a checkpoint with a pre-training head)."""
from __future__ import annotations

from pathlib import Path

import torch

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
MODEL = "tiny-mockingjay-base"  # 2 layers x 4 heads, hidden 32, frame stacking 3



def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """An s3prl-layout checkpoint of the tiny model with a random SpecHead (Transformer + SpecHead +
    Upstream_Config), as the pre-training runner writes it."""
    from satkern.models.s3prl import build_s3prl
    from satkern.models.s3prl.builtin import BUILTIN_CONFIGS
    from satkern.models.s3prl.spec_head import SpecHead

    torch.manual_seed(seed)
    model = build_s3prl("tiny-mockingjay")
    head = SpecHead.for_model(model)
    torch.nn.init.normal_(head.dense.weight, std=0.3)
    spec = BUILTIN_CONFIGS["tiny-mockingjay"]
    states = {"Transformer": model.state_dict(), "SpecHead": head.state_dict(),
              "Upstream_Config": {"transformer": dict(spec["transformer"]), "audio": spec["audio"]}, "Step": 1}
    torch.save(states, path)
    return path

"""The reconstruction head of s3prl's Mockingjay / TERA pre-training (``SpecHead`` in a checkpoint).

s3prl's ``TransformerSpecPredictionHead``, term for term (parameter names match the checkpoint's
``SpecHead`` state dict)::

    dense      Linear(hidden -> hidden)
    act        the config's hidden_act (GELU)
    LayerNorm  TF-style LayerNorm (eps inside the sqrt)
    output     Linear(hidden -> input_dim * downsample_rate)

``forward(hidden) -> (prediction [B, T, input_dim * R], the LayerNorm output)``; the prediction is
compared with the stacked input features (s3prl's ``spec_stacked``).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn

from .model import ACT2FN, S3prlLayerNorm


class SpecHead(nn.Module):
    def __init__(self, hidden_size: int, output_dim: int, *, hidden_act: str = "gelu", layer_norm_eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = ACT2FN[hidden_act]
        self.LayerNorm = S3prlLayerNorm(hidden_size, eps=layer_norm_eps)
        self.output = nn.Linear(hidden_size, output_dim)

    def forward(self, hidden_states: torch.Tensor):
        linear = self.LayerNorm(self.act(self.dense(hidden_states)))
        return self.output(linear), linear

    @classmethod
    def for_model(cls, model) -> "SpecHead":
        """A randomly initialised head that fits an :class:`~satkern.models.s3prl.S3prlTransformer`."""
        cfg = model.config
        return cls(cfg.hidden_size, cfg.input_dim * cfg.downsample_rate, hidden_act=cfg.hidden_act,
                   layer_norm_eps=cfg.layer_norm_eps)


def load_spec_head(path, model, *, trust: bool = False) -> Optional[SpecHead]:
    """The ``SpecHead`` of an s3prl checkpoint file as a :class:`SpecHead` fitting ``model``
    (an S3prlTransformer), or ``None`` when ``path`` is not a file or has no ``SpecHead``.
    Unpickled as safely as the model itself (:func:`satkern.models.s3prl.read_checkpoint`)."""
    from .checkpoint import read_checkpoint

    if not os.path.isfile(os.fspath(path)):
        return None
    states = read_checkpoint(path, trust=trust)
    sd = states.get("SpecHead") if isinstance(states, dict) else None
    if not sd:
        return None
    head = SpecHead.for_model(model)
    sd = {k.replace("gamma", "weight").replace("beta", "bias"): v for k, v in sd.items()}
    missing, unexpected = head.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"s3prl checkpoint {os.fspath(path)!r}: its SpecHead does not fit the model (missing "
                         f"{missing}, unexpected {unexpected})")
    p = next(model.parameters())
    return head.to(device=p.device, dtype=p.dtype).eval()

"""s3prl-format models (Mockingjay / TERA / AudioALBERT, :mod:`satkern.models.s3prl`).

Their self-attention module ``S3prlSelfAttention`` computes q, k, v ``[B, H, T, D]`` and
calls ``self.attend(q, k, v, lengths) -> context [B, H, T, D]``; the patch sets the
instance attribute ``attend`` to a satkern-backed function and deletes it on removal.
"""
from __future__ import annotations

import functools
from typing import List, Tuple

from torch import nn

from .adapter import Adapter
from .core import Patch, owner

DESCRIPTION = "satkern.models.s3prl (Mockingjay/TERA/AudioALBERT)"  # what this adapter patches


def _attention_class():
    try:
        from ..models.s3prl import S3prlSelfAttention
    except ImportError:
        return None
    return S3prlSelfAttention


def _dropout_p(module: nn.Module) -> float:
    for name in ("dropout", "attn_dropout", "attention_dropout"):
        d = getattr(module, name, None)
        if isinstance(d, nn.Dropout):
            return float(d.p)
        if isinstance(d, (int, float)) and not isinstance(d, bool):
            return float(d)
    return 0.0


def _attend(module: nn.Module, q, k, v, lengths=None):
    p = _dropout_p(module)
    if module.training and p > 0:
        raise RuntimeError(f"satkern: {type(module).__name__} is in training mode with attention dropout {p} "
                           f"(config field 'attention_probs_dropout_prob'); satkern does not implement attention "
                           f"dropout. Build the model with attention_probs_dropout_prob=0 to train it patched, "
                           f"or call model.eval().")
    scale = getattr(module, "scaling", None)
    return owner(module).run(module, q, k, v, lengths=lengths, scale=scale)


def find_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    cls = _attention_class()
    if cls is None:
        return []
    # remove_duplicate=False: a shared layer (AudioALBERT) is listed once per position
    return [(name, m) for name, m in model.named_modules(remove_duplicate=False) if isinstance(m, cls)]


def install(patch: Patch, found: List[Tuple[str, nn.Module]], model: nn.Module = None) -> None:
    for m in {id(m): m for _, m in found}.values():
        patch.set_instance_attr(m, "attend", functools.partial(_attend, m))
    # a model that runs long inputs in s3prl's sequence_length chunks tells the patch which calls are
    # chunks of which utterance, so metrics stay one row per utterance
    for module in (model.modules() if model is not None else ()):
        if hasattr(module, "chunk_listener") and hasattr(module, "chunk_sizes"):
            patch.set_instance_attr(module, "chunk_listener", patch)


class S3prlAdapter(Adapter):
    """satkern's own s3prl-format models."""

    description = DESCRIPTION

    def find(self, model: nn.Module) -> List[Tuple[str, nn.Module]]:
        return find_modules(model)

    def install(self, patch: Patch, model: nn.Module, found: List[Tuple[str, nn.Module]]) -> None:
        install(patch, found, model)


ADAPTER = S3prlAdapter()

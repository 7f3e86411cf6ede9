"""Mockingjay pre-training of s3prl-format transformers (``satkern pretrain``).

* :func:`pretrain` / :class:`PretrainConfig` -- the training run (resumable, s3prl checkpoints);
* :func:`mask_frames` -- the MAM masking (the head is :class:`satkern.rank.SpecHead`);
* :func:`ship_checkpoint` -- a float16, optimizer-free copy of a checkpoint for distribution.
"""
from .checkpoint import atomic_save, latest_checkpoint, ship_checkpoint
from .masking import mask_frames
from .train import PretrainConfig, build_model, masked_l1, pretrain, reconstruct, upstream_config

__all__ = ["pretrain", "PretrainConfig", "mask_frames", "ship_checkpoint",
           "latest_checkpoint", "atomic_save", "build_model", "reconstruct", "masked_l1", "upstream_config"]

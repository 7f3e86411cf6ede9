"""Gradient head importance (Michel et al. 2019), through the model's eager attention path.

I_h = abs(sum over the train split of dL/dxi_h): ``xi`` ``[L, H]`` is a gate of ones multiplying
each head's context output, ``L`` the phone probe's cross-entropy (summed over labelled frames) of
a probe trained on the unrefined model's last-layer frames (the same probe settings as the curves).

Which path runs: the s3prl model's own eager attention with its ``head_mask`` argument as the
gates (``S3prlSelfAttention`` multiplies each head's context by it: (A m) V = (A V) m), not
:func:`satkern.patch` -- satkern's fused attention has no backward in this build, and
``satkern.patch(head_gates=True)`` (the autograd issue) is not used. Other model families raise
``ValueError`` (transformers 5 has no ``head_mask``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

GRADIENT_PATH = "eager s3prl attention, head_mask as gates (torch autograd; not satkern.patch)"


def gradient_importance(setup) -> np.ndarray:
    """Michel et al.'s I_h ``[L, H]`` (float64, raw: not normalized per layer) for a :class:`RankSetup`."""
    from .probes import TaskSkipped, _labelled_frames, train_frame_probe

    sm = setup.speech_model
    if sm.family != "s3prl":
        raise ValueError(f"order 'gradient': needs an s3prl-format model (eager head_mask gates); {sm.name!r} is a "
                         f"{sm.family} model")
    train = setup.features("train", {})
    if train.phones is None:
        raise ValueError("order 'gradient': needs phone alignments (the loss is the phone probe's)")
    x, y = _labelled_frames(train)
    if x.shape[0] == 0:
        raise ValueError("order 'gradient': the train split has no labelled frames")
    net, norm = train_frame_probe(x, y, num_classes=len(train.labels), seed=setup.probe_seed, steps=setup.probe_steps)
    model = sm.model
    L, H = model.num_layers, model.num_heads
    dev = torch.device(setup.device)
    gates = torch.ones(L, H, device=dev, requires_grad=True)
    flags = [p.requires_grad for p in model.parameters()]
    for p in list(model.parameters()) + list(net.parameters()):
        p.requires_grad_(False)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    from .probes import _batches, frame_phone_labels

    try:
        with torch.enable_grad():
            for batch in _batches([u.num_samples for u in setup.train], int(setup.batch_seconds * sm.sample_rate)):
                utts = [setup.train[i] for i in batch]
                with torch.no_grad():
                    inputs, frame_lengths = sm.prepare([u.waveform.to(dev) for u in utts])
                out = model(inputs["feats"], inputs["lengths"], head_mask=gates)
                hidden = out.last_hidden_state
                xs, ys = [], []
                for j, u in enumerate(utts):
                    T = int(frame_lengths[j])
                    lab = frame_phone_labels(u.segments, u.num_samples, sm.frame_stride, T, setup.label_index)
                    keep = lab >= 0
                    xs.append(hidden[j, :T][keep.to(dev)])
                    ys.append(lab[keep])
                xb = torch.cat(xs)
                if xb.shape[0] == 0:
                    continue
                loss = loss_fn(net(norm(xb.cpu())), torch.cat(ys))
                loss.backward()
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return gates.grad.detach().abs().double().cpu().numpy()

"""Gradient head importance (Michel et al. 2019).

I_h = abs(sum over the train split of dL/dxi_h): ``xi`` ``[L, H]`` is a gate of ones multiplying
each head's context output, ``L`` the phone probe's cross-entropy (summed over labelled frames) of
a probe trained on the unrefined model's last-layer frames (the same probe settings as the curves).

The gates are ``satkern.patch(model, head_gates=True)`` and the gradient flows through satkern's own
attention backward (any model family satkern patches). ``path="eager"`` computes the same through an
s3prl model's eager attention with its ``head_mask`` argument as the gates ((A m) V = (A V) m): the
independent check the tests hold the satkern path to.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

GRADIENT_PATHS = {
    "satkern": "satkern.patch(head_gates=True): gradients through satkern's attention backward",
    "eager": "eager s3prl attention, head_mask as gates (torch autograd)",
}


def gradient_importance(setup, path: str = "satkern") -> np.ndarray:
    """Michel et al.'s I_h ``[L, H]`` (float64, raw: not normalized per layer) for a :class:`RankSetup`."""
    from .. import patch
    from .probes import _batches, _labelled_frames, frame_phone_labels, train_frame_probe

    if path not in GRADIENT_PATHS:
        raise ValueError(f"gradient_importance: path must be one of {sorted(GRADIENT_PATHS)}; got {path!r}")
    sm = setup.speech_model
    if path == "eager" and not sm.supports_head_mask:
        raise ValueError(f"gradient_importance(path='eager'): needs an s3prl-format model (head_mask gates); "
                         f"{sm.name!r} is a {sm.family} model")
    train = setup.features("train", {})
    if train.phones is None:
        raise ValueError("order 'gradient': needs phone alignments (the loss is the phone probe's)")
    x, y = _labelled_frames(train)
    if x.shape[0] == 0:
        raise ValueError("order 'gradient': the train split has no labelled frames")
    net, norm = train_frame_probe(x, y, num_classes=len(train.labels), seed=setup.probe_seed, steps=setup.probe_steps)
    model = sm.model
    dev = torch.device(setup.device)
    flags = [p.requires_grad for p in model.parameters()]
    for p in list(model.parameters()) + list(net.parameters()):
        p.requires_grad_(False)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    if path == "eager":
        gates = torch.ones(sm.num_layers, sm.num_heads, device=dev, requires_grad=True)
        handle = None

        def hidden_of(inputs):
            return sm(inputs, head_mask=gates).last_hidden_state
    else:
        handle = patch(sm, stats=(), head_gates=True, backend=setup.backend)

        def hidden_of(inputs):
            return sm(inputs).last_hidden_state
    try:
        with torch.enable_grad():
            for batch in _batches([u.num_samples for u in setup.train], int(setup.batch_seconds * sm.sample_rate)):
                utts = [setup.train[i] for i in batch]
                with torch.no_grad():
                    inputs, frame_lengths = sm.prepare([u.waveform.to(dev) for u in utts])
                hidden = hidden_of(inputs)
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
                loss_fn(net(norm(xb.cpu())), torch.cat(ys)).backward()
        if handle is None:
            return gates.grad.detach().abs().double().cpu().numpy()
        return handle.head_importance(normalized=False).double().numpy()
    finally:
        if handle is not None:
            handle.remove()
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)

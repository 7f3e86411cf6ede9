"""The planted local heads of ``satkern pretrain`` (docs/models/recipe-search.md sections 4-7).

* :func:`local_init` -- positional initialization of the query/key projections of the first heads
  of every layer, so that they start attending one frame back / ahead;
* :func:`hold_position_dims` -- the first dimensions of the representation keep s3prl's sinusoidal
  table (nothing the input projection or, optionally, a layer writes lands there);
* :class:`PlantedRate` -- those heads' query/key rows train at their own learning rate.
"""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def hold_position_dims(model, n: int, layers: bool = False) -> None:
    """Zero the first ``n`` output rows of the input projection ``spec_transform`` (weight and bias)
    and zero their gradients for the rest of training, so that the first ``n`` dimensions of the
    input representation are s3prl's sinusoidal table alone (then the input LayerNorm). With
    ``layers``, the same for the two residual writes of every layer (the attention output's
    ``dense`` and the feed-forward output's ``dense``): nothing a layer adds lands in those
    dimensions, and each layer's LayerNorm only rescales and shifts them per frame.

    Why (docs/models/recipe-search.md section 5): heads planted by :func:`local_init` read those
    dimensions, and what moved them off the diagonal in the 12-layer runs was not their query/key
    weights (restored to their initial values, the heads stay broad) but the input projection: as
    its output grew, the features written into the table's dimensions drowned the position signal
    (restoring the input projection alone brings the heads of the first layers back within 2
    frames). Held at the input only, the table still fades layer by layer (R^2 of those dimensions
    on the table 0.98 at the first layer, 0.79 at the last after 1,000 steps); ``layers`` is the
    hold for that. The checkpoint stays an ordinary s3prl checkpoint; those rows are simply zero."""
    linears = [model.input_representations.spec_transform]
    if layers:
        for layer in model.encoder.layer:
            linears += [layer.attention.output.dense, layer.output.dense]

    def hold(g):  # on whatever device and dtype the gradient has (--device cuda included)
        g = g.clone()
        g[:n] = 0
        return g

    for lin in linears:
        lin.weight[:n] = 0.0
        lin.bias[:n] = 0.0
        lin.weight.register_hook(hold)
        lin.bias.register_hook(hold)


@torch.no_grad()
def local_init(model, heads_per_layer: int, gain: float, shift: int = 0) -> None:
    """Positional initialization of the query and key projections of the first ``heads_per_layer``
    heads of every layer: ``gain * I`` from the first ``head_size`` hidden dimensions to the head's
    dimensions (the query's rotated by ``shift`` frames, below), added to s3prl's
    N(0, initializer_range) weights.

    Why (docs/models/recipe-search.md): the input representation adds s3prl's sinusoidal table,
    whose first ``head_size`` dimensions are its highest-frequency sin/cos pairs, so for these heads
    ``q_i . k_j`` starts as ``gain^2`` times a kernel ``sum_k cos(w_k (i - j - s))`` that peaks at
    ``j = i - s``: attention that begins local. With ``shift`` s > 0 the query's pair k is rotated
    by ``w_k s`` so that heads 0, 2, .. start on the frame s back and heads 1, 3, .. on the frame s
    ahead (a masked frame's own input is zeros; its neighbours carry the answer), with 0 every
    planted head starts on its own frame. From s3prl's initialization alone, masked reconstruction
    on the synthetic corpus settles on near-uniform attention and never finds local heads
    (measured); the architecture, the loss and every other weight are s3prl's, and training is free
    to move these heads anywhere."""
    cfg = model.config
    hidden = cfg.hidden_size
    dh = hidden // cfg.num_attention_heads
    for layer in model.encoder.layer:
        att = layer.attention.self
        for h in range(int(heads_per_layer)):
            s = float(shift) * (1.0 if h % 2 == 0 else -1.0)
            rows = slice(h * dh, (h + 1) * dh)
            att.key.weight[rows, :dh] += float(gain) * torch.eye(dh, dtype=att.key.weight.dtype)
            att.query.weight[rows, :dh] += _rotation(dh, hidden, s, gain).to(att.query.weight.dtype)


def _rotation(dh: int, hidden: int, shift: float, gain: float) -> torch.Tensor:
    """``gain`` times the block-diagonal map that turns the table's pair (sin w p, cos w p) of each
    of the first ``dh`` dimensions into (sin w (p - shift), cos w (p - shift)); the identity at 0.
    Dimensions ``2k, 2k+1`` hold frequency ``w_k = 10000^(-2k / hidden)`` (s3prl's table)."""
    m = torch.zeros(dh, dh, dtype=torch.float64)
    for k in range(dh // 2):
        c = shift * 10000.0 ** (-2.0 * k / hidden)
        m[2 * k, 2 * k], m[2 * k, 2 * k + 1] = math.cos(c), -math.sin(c)
        m[2 * k + 1, 2 * k], m[2 * k + 1, 2 * k + 1] = math.sin(c), math.cos(c)
    if dh % 2:
        m[dh - 1, dh - 1] = 1.0
    return (m * float(gain)).to(torch.float32)


class PlantedRate:
    """The query/key rows of the planted heads (the first ``heads_per_layer`` heads of every layer,
    weights and biases) at ``scale`` times the optimizer's learning rate: ``with PlantedRate(..):
    optimizer.step()`` keeps those rows' values from before the step and moves them only ``scale``
    of the way to where the step put them. For AdamW this is exactly a learning rate ``scale * lr``
    for those rows (its moments see the gradients alone, and the decoupled weight decay is scaled
    by the learning rate as well), and nothing else in the optimizer or its checkpoint changes.

    Why (docs/models/recipe-search.md section 7): at lr 5e-4 the planted heads' own query/key
    weights carry them off the diagonal (resetting just those rows of a trained model brings the
    heads of its first layers back within 2 frames), while the rest of the model, the phone
    information of m3's last layer included, needs the higher rate; s3prl's 2e-4 keeps the heads."""

    def __init__(self, model, heads_per_layer: int, scale: float):
        cfg = model.config
        self.rows = int(heads_per_layer) * (cfg.hidden_size // cfg.num_attention_heads)
        self.scale = float(scale)
        self.tensors = []
        for layer in model.encoder.layer:
            att = layer.attention.self
            for lin in (att.query, att.key):
                self.tensors += [t for t in (lin.weight, lin.bias) if t is not None]
        self._before = None

    def __enter__(self):
        self._before = [t.detach()[: self.rows].clone() for t in self.tensors]
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            with torch.no_grad():
                for t, old in zip(self.tensors, self._before):
                    t[: self.rows] = old + self.scale * (t[: self.rows] - old)
        self._before = None
        return False

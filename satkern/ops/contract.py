"""The one op contract: argument validation and the normalized call every backend receives.

``satkern.attention`` validates its arguments here exactly once; backends get an
:class:`AttentionCall` whose fields are already checked and normalized, so a backend
never re-validates and never sees a user-facing type it has to interpret.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

STAT_NAMES: Tuple[str, ...] = ("entropy", "distance", "colmass", "maxweight")
SPAN_MODES: Tuple[str, ...] = ("zero", "renorm")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class AttentionResult:
    """What ``satkern.attention`` returns.

    Shapes (B batch, H heads, T frames, D head dim, L labels):

    ====================  ===============  =========================================
    field                 shape            meaning
    ====================  ===============  =========================================
    ``out``               ``[B,H,T,D]``    attention output, dtype of ``q``
    ``lse``               ``[B,H,T]``      natural-log log-sum-exp of the scaled scores
    ``entropy``           ``[B,H,T]``      row entropy (nats)
    ``distance``          ``[B,H,T]``      sum_k abs(q-k) A[q,k]
    ``colmass``           ``[B,H,T]``      sum_q A[q,k] over valid queries, indexed by key
    ``maxweight``         ``[B,H,T]``      max_k A[q,k]
    ``label_mass``        ``[B,H,T,L]``    sum_k A[q,k] W[k,l]
    ``lengths``           ``[B]``          valid frames per utterance (int64, on q's device)
    ====================  ===============  =========================================

    Statistics are ``None`` unless asked for; they are float32, or float64 for float64 inputs.
    """

    out: torch.Tensor
    lse: torch.Tensor
    entropy: Optional[torch.Tensor] = None
    distance: Optional[torch.Tensor] = None
    colmass: Optional[torch.Tensor] = None
    maxweight: Optional[torch.Tensor] = None
    label_mass: Optional[torch.Tensor] = None
    lengths: Optional[torch.Tensor] = None
    backend: str = ""


@dataclass
class AttentionCall:
    """Validated, normalized arguments of one ``satkern.attention`` call.

    * ``lengths``: int64 ``[B]`` on q's device (full length when the user gave none).
    * ``bias``: ``None`` or a float tensor expanded (a view, no copy) to ``[B,H,T,T]``;
      ``bias_compact``: the same bias as given, viewed as 4-d (leading size-1 dims), not expanded
      (its gradient then comes back summed over the broadcast dims).
    * ``head_mask``: ``None`` or a bool ``[B,H]`` tensor, True = head kept.
    * ``span``: ``None`` or an int >= 0; ``span_mode`` one of :data:`SPAN_MODES`.
    * ``stats``: a frozenset of names from :data:`STAT_NAMES`.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    lengths: torch.Tensor
    scale: float
    bias: Optional[torch.Tensor]
    stats: frozenset
    span: Optional[int]
    span_mode: str
    head_mask: Optional[torch.Tensor]
    label_weights: Optional[torch.Tensor]
    user_lengths: bool = field(default=False)
    bias_compact: Optional[torch.Tensor] = field(default=None)

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        B, H, T, D = self.q.shape
        return B, H, T, D

    @property
    def stat_dtype(self) -> torch.dtype:
        return torch.float64 if self.q.dtype == torch.float64 else torch.float32

    def wants(self, name: str) -> bool:
        return name in self.stats


def _fail(arg: str, expected: str, got: str) -> None:
    raise ValueError(f"satkern.attention: argument '{arg}' must be {expected}; got {got}")


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a host tensor goes by a non-blocking copy (the host does not wait for the GPU's
    queue to drain; the source is staged by the driver at once, so it may be reused right after)."""
    if t.device == device:
        return t
    return t.to(device=device, non_blocking=t.device.type == "cpu")


def _check_on_device(ok: torch.Tensor, message: str) -> None:
    """Value check of a tensor that lives on a device, without reading it on the host (which would wait for
    the device on every call): the device raises (asynchronously, at a later synchronization) if ``ok`` is
    not all true. On meta tensors it checks nothing (there are no values)."""
    if ok.device.type in ("meta",):
        return
    torch._assert_async(ok.all(), message)


def validate(q, k, v, *, lengths=None, scale=None, bias=None, stats=(), span=None,
             span_mode="zero", head_mask=None, label_weights=None) -> AttentionCall:
    """Check every argument of ``satkern.attention`` and normalize it.

    Raises ``ValueError`` (wrong value/shape) or ``TypeError`` (wrong type) naming the
    argument and what was expected.

    Never reads a value of a tensor that is not on the CPU (a read would make the host wait for the GPU on
    every call, i.e. every layer): ``lengths`` and ``head_mask`` values are checked on the host when given on
    the CPU (the usual case), and with ``torch._assert_async`` on the device otherwise (an out-of-range
    value then fails at the next synchronization, as a device-side assertion). Validation runs on ``meta``
    tensors (tests/test_validation.py holds it to that).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"satkern.attention: argument '{name}' must be a torch.Tensor "
                            f"[B, H, T, D]; got {type(t).__name__}")
        if t.dim() != 4:
            _fail(name, "a 4-d tensor [B, H, T, D]", f"{t.dim()}-d tensor of shape {tuple(t.shape)}")
        if t.dtype not in FLOAT_DTYPES:
            _fail(name, "float16, bfloat16, float32 or float64", str(t.dtype))
    if k.shape != q.shape:
        _fail("k", f"the same shape as q {tuple(q.shape)} (self-attention)", str(tuple(k.shape)))
    if v.shape[:3] != q.shape[:3]:
        _fail("v", f"shape [B, H, T, Dv] with [B, H, T] = {tuple(q.shape[:3])} as in q", str(tuple(v.shape)))
    if v.shape[3] != q.shape[3]:
        _fail("v", f"head dim {q.shape[3]} equal to q's", f"head dim {v.shape[3]}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            _fail(name, f"dtype {q.dtype} like q", str(t.dtype))
        if t.device != q.device:
            _fail(name, f"on device {q.device} like q", str(t.device))
    B, H, T, D = q.shape
    if D == 0:
        _fail("q", "a tensor with head dim D >= 1", "D = 0")

    # ---- scale
    if scale is None:
        scale = float(D) ** -0.5
    else:
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise TypeError(f"satkern.attention: argument 'scale' must be a float; got {type(scale).__name__}")
        if scale != scale or scale in (float("inf"), float("-inf")):
            _fail("scale", "a finite float", str(scale))

    # ---- lengths
    user_lengths = lengths is not None
    if lengths is None:
        lengths_t = torch.full((B,), T, dtype=torch.int64, device=q.device)
    else:
        if not isinstance(lengths, torch.Tensor):
            lengths = torch.as_tensor(lengths)
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            _fail("lengths", "an integer tensor [B]", f"dtype {lengths.dtype}")
        if lengths.shape != (B,):
            _fail("lengths", f"shape [B] = [{B}]", f"shape {tuple(lengths.shape)}")
        if lengths.device.type == "cpu":
            # values checked on the host copy (no device read); then one non-blocking copy to q's device
            if B > 0:
                lo, hi = int(lengths.min()), int(lengths.max())
                if lo < 0 or hi > T:
                    _fail("lengths", f"values in [0, T={T}]", f"values in [{lo}, {hi}]")
            lengths_t = _to_device(lengths.to(torch.int64), q.device)
        else:
            lengths_t = lengths.to(device=q.device, dtype=torch.int64)
            if B > 0:
                _check_on_device((lengths_t >= 0) & (lengths_t <= T),
                                 f"satkern.attention: argument 'lengths' must hold values in [0, T={T}]")

    # ---- bias
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"satkern.attention: argument 'bias' must be a float tensor broadcastable "
                            f"to [B, H, T, T]; got {type(bias).__name__}")
        if not bias.dtype.is_floating_point:
            _fail("bias", "a floating-point tensor", f"dtype {bias.dtype}")
        if bias.device != q.device:
            _fail("bias", f"on device {q.device} like q", str(bias.device))
        if bias.dim() > 4:
            _fail("bias", f"broadcastable to [B, H, T, T] = {[B, H, T, T]}", f"shape {tuple(bias.shape)}")
        try:
            bias_compact = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape)) if bias.dim() < 4 else bias
            bias = bias.expand(B, H, T, T)
        except RuntimeError:
            _fail("bias", f"broadcastable to [B, H, T, T] = {[B, H, T, T]}", f"shape {tuple(bias.shape)}")
    else:
        bias_compact = None

    # ---- stats
    if isinstance(stats, str):
        stats = (stats,)
    try:
        stats_set = frozenset(stats)
    except TypeError:
        raise TypeError(f"satkern.attention: argument 'stats' must be a collection of names from "
                        f"{STAT_NAMES}; got {type(stats).__name__}")
    unknown = sorted(str(s) for s in stats_set if s not in STAT_NAMES)
    if unknown:
        _fail("stats", f"a subset of {STAT_NAMES}", f"unknown name(s) {unknown}")

    # ---- span
    if span_mode not in SPAN_MODES:
        _fail("span_mode", f"one of {SPAN_MODES}", repr(span_mode))
    if span is not None:
        if isinstance(span, bool) or not isinstance(span, (int,)) and not (
                isinstance(span, torch.Tensor) and span.numel() == 1 and not span.dtype.is_floating_point):
            raise TypeError(f"satkern.attention: argument 'span' must be a non-negative int or None; "
                            f"got {type(span).__name__}")
        span = int(span)
        if span < 0:
            _fail("span", "a non-negative int (frames) or None", str(span))

    # ---- head_mask
    if head_mask is not None:
        if not isinstance(head_mask, torch.Tensor):
            head_mask = torch.as_tensor(head_mask)
        if head_mask.dim() == 1:
            if head_mask.shape[0] != H:
                _fail("head_mask", f"shape [H] = [{H}] or [B, H] = [{B}, {H}]", f"shape {tuple(head_mask.shape)}")
            head_mask = head_mask.unsqueeze(0).expand(B, H)
        elif head_mask.dim() == 2:
            if tuple(head_mask.shape) != (B, H):
                _fail("head_mask", f"shape [H] = [{H}] or [B, H] = [{B}, {H}]", f"shape {tuple(head_mask.shape)}")
        else:
            _fail("head_mask", f"shape [H] = [{H}] or [B, H] = [{B}, {H}]", f"shape {tuple(head_mask.shape)}")
        if head_mask.dtype != torch.bool:
            vals = head_mask.to(torch.float64)
            if head_mask.device.type == "cpu":
                if not bool(((vals == 0) | (vals == 1)).all()):
                    _fail("head_mask", "0/1 or bool values", "other values")
            else:
                _check_on_device((vals == 0) | (vals == 1),
                                 "satkern.attention: argument 'head_mask' must hold 0/1 or bool values")
        head_mask = _to_device(head_mask.to(torch.bool), q.device).contiguous()

    # ---- label_weights
    if label_weights is not None:
        if not isinstance(label_weights, torch.Tensor):
            raise TypeError("satkern.attention: argument 'label_weights' must be a float tensor [B, T, L]; "
                            f"got {type(label_weights).__name__}")
        if not label_weights.dtype.is_floating_point:
            _fail("label_weights", "a floating-point tensor [B, T, L]", f"dtype {label_weights.dtype}")
        if label_weights.dim() != 3 or label_weights.shape[0] != B or label_weights.shape[1] != T:
            _fail("label_weights", f"shape [B, T, L] = [{B}, {T}, L]", f"shape {tuple(label_weights.shape)}")
        if label_weights.device != q.device:
            _fail("label_weights", f"on device {q.device} like q", str(label_weights.device))

    return AttentionCall(q=q, k=k, v=v, lengths=lengths_t, scale=scale, bias=bias, stats=stats_set,
                         span=span, span_mode=span_mode, head_mask=head_mask,
                         label_weights=label_weights, user_lengths=user_lengths,
                         bias_compact=bias_compact)

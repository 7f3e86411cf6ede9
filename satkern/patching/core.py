"""The model-independent part of patching: :class:`Patch`, the capture and the refinement.

This module knows no model family and imports no adapter. A model adapter
(``hf.py``, ``s3prl.py``; each holds its own table of what it patches) finds the self-attention modules of a
model, hands them to :class:`Patch` in model order, and reroutes each module's
attention core to :meth:`Patch.run`, which calls :func:`satkern.attention` with the
layer's refinement (pruned heads, span) and turns the per-row statistics the kernel
emits into per-utterance head metrics (:func:`satkern.head_metrics`) and, when frame
labels were given, phoneme relation sums (METRICS.md sec. 6). No attention map is
ever materialized here (the reference backend does, internally; the fused ones don't).
"""
from __future__ import annotations

import operator
import warnings
from typing import Dict, Iterable, List, Optional

import torch
from torch import nn

from ..metrics import METRIC_STATS, HeadMetrics, head_metrics
from ..ops import SPAN_MODES, STAT_NAMES, attention, backends

# attention module -> the Patch that owns it (one patch per module at a time)
_OWNER: Dict[nn.Module, "Patch"] = {}


def owner(module: nn.Module) -> Optional["Patch"]:
    """The active :class:`Patch` that reroutes ``module``, or ``None``."""
    return _OWNER.get(module)


def num_heads_of(module: nn.Module) -> int:
    for name in ("num_heads", "num_attention_heads", "n_heads", "heads"):
        value = getattr(module, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise TypeError(f"satkern.patch: cannot tell the number of heads of {type(module).__name__} "
                    f"(no num_heads / num_attention_heads attribute)")


def lengths_from_mask(mask: Optional[torch.Tensor], batch: int, frames: int) -> Optional[torch.Tensor]:
    """Valid frames per utterance ``[B]`` from a padding mask, checking it is a prefix mask.

    Accepts ``None`` (no padding), a 2-d ``[B, T]`` mask (bool or 0/1: True/1 = valid frame),
    or a 4-d ``[B, 1|H, T, T]`` mask (bool: True = attend; float: 0 = attend, very negative =
    masked) that masks the same keys on every row. Anything else, or a mask that is not
    "the first n frames valid" per utterance, raises ``ValueError``.
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"satkern: attention mask must be a tensor; got {type(mask).__name__}")
    if mask.dim() == 2:
        valid = mask.bool() if mask.dtype == torch.bool else mask != 0
        if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("satkern: a 2-d attention mask must hold 0/1 (or bool) values")
    elif mask.dim() == 4:
        if mask.dtype == torch.bool:
            full = mask
        else:
            # additive float mask: 0 where attended, the dtype's minimum (or -inf) where masked
            full = mask == 0
            if not bool((full | (mask <= torch.finfo(mask.dtype).min / 2)).all()):
                raise ValueError("satkern: the 4-d float attention mask carries values other than 0 and "
                                 "'masked' (an additive bias?); pass biases separately")
        valid = full[:, 0, 0, :]
        if not bool((full == valid[:, None, None, :]).all()):
            raise ValueError("satkern: the attention mask is not a key-padding mask (its rows differ: "
                             "causal or custom masks are not supported by the satkern attention)")
    else:
        raise ValueError(f"satkern: attention mask must be 2-d [B, T] or 4-d [B, 1, T, T]; got shape "
                         f"{tuple(mask.shape)}")
    if valid.shape[0] != batch or valid.shape[-1] != frames:
        raise ValueError(f"satkern: attention mask of shape {tuple(mask.shape)} does not fit a batch of "
                         f"{batch} sequences of {frames} frames")
    lengths = valid.sum(-1).to(torch.int64)
    prefix = torch.arange(frames, device=valid.device)[None, :] < lengths[:, None]
    if not bool((prefix == valid).all()):
        bad = int((prefix != valid).any(-1).nonzero()[0])
        raise ValueError(f"satkern: the attention mask of utterance {bad} is not a prefix (right-padding) "
                         f"mask; satkern needs every utterance's valid frames first, padding after")
    return lengths


def _fill_padded_rows(out, q, k, v, lengths, scale, bias, heads, span, span_mode):
    """Write, into ``out``, the rows of padded query frames as the model's own attention computes them.

    The kernels output 0 on padded query rows (q >= T); the models' eager attention lets
    those rows attend to the valid keys. Models that mix frames outside the attention
    (conformer convolutions, SEW pooling) carry those rows into valid frames, so they
    are recomputed here, per utterance, in the input dtype: scores of the padded queries
    against the valid keys, plus the bias, softmax, (span applied as in the kernel), times
    the valid values. Pruned heads stay 0. Rows with no admissible key stay 0.

    ``lengths`` are host (CPU) values; ``heads`` the kept heads' indices on q's device, or ``None`` for all.
    """
    B, H, T, D = q.shape
    for b in range(B):
        n = int(lengths[b])
        if n >= T or n == 0:
            continue
        qb, kb, vb = q[b, :, n:], k[b, :, :n], v[b, :, :n]
        bb = None if bias is None else bias[b, :, n:, :n]
        if heads is not None:
            qb, kb, vb = qb[heads], kb[heads], vb[heads]
            bb = None if bb is None else bb[heads]
        s = torch.matmul(qb, kb.transpose(-1, -2)) * scale
        if bb is not None:
            s = s + bb.to(s.dtype)
        if span is not None:
            qi = torch.arange(n, T, device=q.device)[:, None]
            ki = torch.arange(n, device=q.device)[None, :]
            band = (qi - ki).abs() <= span
            if span_mode == "renorm":
                s = s.masked_fill(~band, float("-inf"))
        a = torch.softmax(s, dim=-1)
        if span is not None:
            a = torch.where(band, a, torch.zeros((), dtype=a.dtype, device=a.device))
        a = torch.nan_to_num(a, nan=0.0)  # renorm rows with no admissible key
        rows = torch.matmul(a, vb).to(out.dtype)
        if heads is None:
            out[b, :, n:] = rows
        else:
            out[b, heads, n:] = rows
    return out


def _slice_chunk_labels(W: torch.Tensor, chunk, T: int) -> torch.Tensor:
    """Rows of the labels ``W [B, T_total, Y]`` (frames of the concatenated output) for one chunk slot:
    ``[b_j, T, Y]``, utterance ``u``'s frames ``offset .. offset + frames`` first, zeros after."""
    utts, offsets, frames = chunk
    out = W.new_zeros(len(utts), T, W.shape[-1])
    for i, (u, o, n) in enumerate(zip(utts.tolist(), offsets.tolist(), frames.tolist())):
        out[i, :n] = W[u, o:o + n]
    return out


def merge_chunk_metrics(slots, parts, total: torch.Tensor, which) -> Dict[str, torch.Tensor]:
    """Per-utterance G, V, D, W of maps made of independent chunks (a block-diagonal map), from each
    chunk's own metrics (METRICS.md; ``T = sum_c T_c``, ``w_c = T_c / T``):

    * G = sum_c w_c G_c                 (the mean row entropy over all rows)
    * D = sum_c w_c^2 D_c               (distances never cross a chunk; 1/T^2 replaces 1/T_c^2)
    * V = sum_c w_c V_c - H(w)          (colmass / T is the w-weighted mixture of the chunks' colmass / T_c,
                                         whose supports are disjoint: H(mix) = sum_c w_c H_c + H(w))
    * W = max_c W_c

    ``slots``: per slot ``(utterances [b_j], chunk frames [b_j])``; ``parts``: per slot a dict of
    ``[b_j, H]`` metrics; ``total`` ``[B]``. Chunks of 0 frames take no part; an utterance of
    length 0 gets NaN.
    """
    B = int(total.numel())
    dev = next((t.device for p in parts for t in p.values()), torch.device("cpu"))
    H = next((t.shape[1] for p in parts for t in p.values()), 0)
    f64 = dict(dtype=torch.float64, device=dev)
    totf = total.to(**f64)
    acc = {"G": torch.zeros(B, H, **f64), "V": torch.zeros(B, H, **f64), "D": torch.zeros(B, H, **f64),
           "W": torch.full((B, H), float("-inf"), **f64)}
    entropy_w = torch.zeros(B, **f64)
    for (utts, frames), part in zip(slots, parts):
        utts, frames = utts.to(dev), frames.to(**f64)
        use = frames > 0
        if not bool(use.any()):
            continue
        u = utts[use]
        w = frames[use] / totf[u]  # [b]
        entropy_w.index_add_(0, u, -torch.special.xlogy(w, w))
        for k in which:
            x = part[k][use].to(torch.float64)
            if k == "G":
                acc["G"].index_add_(0, u, w[:, None] * x)
            elif k == "V":
                acc["V"].index_add_(0, u, w[:, None] * x)
            elif k == "D":
                acc["D"].index_add_(0, u, (w * w)[:, None] * x)
            else:  # max, NaN (pruned head) propagating
                cur = acc["W"][u]
                acc["W"][u] = torch.where(torch.isnan(x) | torch.isnan(cur), torch.full_like(x, float("nan")),
                                          torch.maximum(cur, x))
    acc["V"] = acc["V"] - entropy_w[:, None]
    empty = (total == 0).to(dev)[:, None]
    return {k: torch.where(empty, torch.full_like(acc[k], float("nan")), acc[k]) for k in which}
def _version(t: torch.Tensor) -> int:
    """In-place modification counter of ``t`` (-1 for inference tensors, which keep none; the caches then go
    by the tensor object alone, which they hold, so it cannot be freed and its id reused)."""
    return -1 if t.is_inference() else t._version


class Patch:
    """A model rerouted through satkern; made by :func:`satkern.patch`.

    Attributes (read-only views of the capture):

    * ``metrics``: :class:`~satkern.HeadMetrics` (G, V, D, W), each float32 ``[U, L, H]`` for
      the ``U`` utterances seen so far, ``L`` attention layers in model order, ``H`` heads; a
      metric whose statistic was not asked for is ``None``; NaN for pruned heads and empty
      utterances.
    * ``lengths``: int64 ``[U]``, attention frames per utterance.
    * ``prm_counts`` ``[L, H, Y, Y]``, ``prm_base`` ``[Y, Y]`` (float64), ``prm_utterances``:
      sums of P'_u and P_U,u over the utterances given labels (:meth:`set_labels`).
    * ``num_layers``, ``num_heads``, ``layer_of`` (module -> layer index).
    * ``head_gates`` (with ``head_gates=True``): an ``[L, H]`` ``nn.Parameter`` of ones (the model's
      parameter dtype and device),
      multiplied into each head's attention output (Michel et al. 2019's xi); after ``loss.backward()``
      :meth:`head_importance` reads its gradient. ``None`` without head gates.

    Use as a context manager or call :meth:`remove`; removal restores the model exactly.
    """

    def __init__(self, model: nn.Module, *, stats: Iterable[str] = STAT_NAMES, prune=None, span=None,
                 span_mode: str = "zero", backend: str = "auto", head_gates: bool = False):
        if isinstance(stats, str):
            stats = (stats,)
        stats = tuple(stats)
        unknown = [s for s in stats if s not in STAT_NAMES]
        if unknown:
            raise ValueError(f"satkern.patch: argument 'stats' must be a subset of {STAT_NAMES}; got {unknown}")
        if span_mode not in SPAN_MODES:
            raise ValueError(f"satkern.patch: argument 'span_mode' must be one of {SPAN_MODES}; got {span_mode!r}")
        if not isinstance(backend, str):
            raise TypeError(f"satkern.patch: argument 'backend' must be a string; got {type(backend).__name__}")
        if backend != "auto" and backend not in backends():
            raise ValueError(f"satkern.patch: argument 'backend' must be 'auto' or one of {sorted(backends())}; "
                             f"got {backend!r}")
        self.model = model
        self.stats = frozenset(stats)
        self.span_mode = span_mode
        self.backend = backend
        self._which = tuple(m for m, s in METRIC_STATS.items() if s in self.stats)
        self._modules: List[nn.Module] = []  # distinct patched modules
        self.layer_of: Dict[nn.Module, int] = {}  # module -> its (first) layer
        self._shared: set = set()  # modules serving several layers (layer read from module.layer_index)
        self._num_slots = 0
        self._undo: List = []
        self._removed = False
        self._prune_arg, self._span_arg = prune, span
        self.backends_used: set = set()  # names of the satkern backends that ran (for reports)
        self._nan_warned = False  # the NaN warning is given once per patch
        # host-side caches, so that a forward reads device values at most once (not once per layer):
        self._mask_cache = None  # (mask, mask._version, batch, frames, how, lengths) of the last mask seen
        self._host_cache = None  # (lengths, lengths._version, CPU copy) of the last lengths seen
        self._device_keep: Dict[tuple, tuple] = {}  # (layer, device) -> (head_mask, kept head indices)
        if not isinstance(head_gates, bool):
            raise TypeError(f"satkern.patch: argument 'head_gates' must be a bool; got {type(head_gates).__name__}")
        self._want_gates = head_gates
        self.head_gates: Optional[nn.Parameter] = None
        self.reset()

    # ------------------------------------------------------------------ set-up (adapters)
    def _add_layers(self, slots: List[nn.Module]) -> None:
        """Attention modules in model order, one per layer; a module that serves several layers
        (AudioALBERT's ``share_layer``) appears once per layer and must say which layer is
        running through its ``layer_index`` attribute (set by its encoder before each call)."""
        for m in slots:
            if m in _OWNER:
                raise RuntimeError(f"satkern.patch: {type(m).__name__} is already patched; remove the other "
                                   f"patch first")
            if m in self.layer_of:
                if not hasattr(m, "layer_index"):
                    raise TypeError(f"satkern.patch: {type(m).__name__} serves several layers but has no "
                                    f"layer_index attribute to tell them apart")
                self._shared.add(m)
            else:
                self.layer_of[m] = self._num_slots
                self._modules.append(m)
            self._num_slots += 1

    def _finish_setup(self, supported: str = "") -> None:
        """Check the layers the adapters found; ``supported`` (what the adapters know, for the error
        message) comes from them: the core knows no model family."""
        if not self._modules:
            raise TypeError(f"satkern.patch: found no supported self-attention module in "
                            f"{type(self.model).__name__}" + (f"; supported: {supported}" if supported else ""))
        heads = sorted({num_heads_of(m) for m in self._modules})
        if len(heads) != 1:
            raise ValueError(f"satkern.patch: layers have different head counts {heads}; unsupported")
        self.num_layers = self._num_slots
        self.num_heads = heads[0]
        self._keep = self._parse_prune(self._prune_arg)
        self._spans = self._parse_span(self._span_arg)
        if self._want_gates:
            # on the model's device, in its parameter dtype (float32 for a model without float parameters)
            first = next((p for p in self.model.parameters() if p.dtype.is_floating_point), None)
            device = first.device if first is not None else None
            dtype = first.dtype if first is not None else torch.float32
            self.head_gates = nn.Parameter(torch.ones(self.num_layers, self.num_heads, device=device, dtype=dtype))
        for m in self._modules:
            _OWNER[m] = self

    def _set_instance_attr(self, module: nn.Module, name: str, value) -> None:
        """Set ``module.<name> = value`` as an instance attribute; removal restores the former instance
        attribute, or deletes it when there was none (the class attribute shows again)."""
        had = name in module.__dict__
        old = module.__dict__.get(name)
        setattr(module, name, value)

        def restore():
            if had:
                module.__dict__[name] = old
            else:
                module.__dict__.pop(name, None)

        self._undo.append(restore)

    def _parse_prune(self, prune) -> List[Optional[torch.Tensor]]:
        keep: List[Optional[torch.Tensor]] = [None] * self.num_layers
        if prune is None:
            return keep
        try:
            pairs = [tuple(p) for p in prune]
        except TypeError:
            raise TypeError("satkern.patch: argument 'prune' must be a set of (layer, head) pairs") from None
        for p in pairs:
            try:
                if len(p) != 2 or any(isinstance(i, bool) for i in p):
                    raise TypeError
                layer, head = (operator.index(i) for i in p)  # ints, numpy / 0-d torch integers
            except TypeError:
                raise ValueError(f"satkern.patch: argument 'prune' must hold (layer, head) int pairs; "
                                 f"got {p!r}") from None
            if not (0 <= layer < self.num_layers and 0 <= head < self.num_heads):
                raise ValueError(f"satkern.patch: pruned head {p} out of range: {self.num_layers} layers x "
                                 f"{self.num_heads} heads")
            if keep[layer] is None:
                keep[layer] = torch.ones(self.num_heads, dtype=torch.bool)
            keep[layer][head] = False
        return keep

    def _parse_span(self, span) -> List[Optional[int]]:
        def check(r, where):
            if r is None:
                return None
            try:
                if isinstance(r, bool):
                    raise TypeError
                value = operator.index(r)
            except TypeError:
                value = -1
            if value < 0:
                raise ValueError(f"satkern.patch: span{where} must be a non-negative int (frames) or None; got {r!r}")
            return value

        if isinstance(span, dict):
            bad = [l for l in span if not isinstance(l, int) or not 0 <= l < self.num_layers]
            if bad:
                raise ValueError(f"satkern.patch: span dict keys must be layer indices in "
                                 f"[0, {self.num_layers}); got {bad}")
            return [check(span.get(l), f"[{l}]") for l in range(self.num_layers)]
        return [check(span, "")] * self.num_layers

    # ------------------------------------------------------------------ capture state
    def reset(self) -> None:
        """Forget the accumulated metrics, lengths and PRM sums (and pending labels)."""
        self._rows: Dict[int, Dict[str, List[torch.Tensor]]] = {}
        self._lengths: Dict[int, List[torch.Tensor]] = {}
        self.prm_counts: Optional[torch.Tensor] = None
        self.prm_base: Optional[torch.Tensor] = None
        self.prm_utterances = 0
        self._labels: Optional[torch.Tensor] = None
        self._labels_used: set = set()
        self._chunks = None  # between begin_chunks and end_chunks: the chunk plan and its buffers
        self._nan: Dict[int, List[torch.Tensor]] = {}  # per layer: [B, H] bool, a valid row was NaN

    # ------------------------------------------------------------------ chunked utterances
    def begin_chunks(self, batch: int, slots) -> None:
        """A model is about to run each of ``batch`` utterances as independent attention sequences
        (chunks, e.g. s3prl's ``sequence_length`` pieces), as one forward per *slot*: slot ``j`` is
        ``(utterances [b_j], frame offsets [b_j], frames [b_j])``, the j-th chunk of each listed
        utterance, whose model frames ``offset .. offset + frames`` of the concatenated output it
        computes. Until :meth:`end_chunks`, each layer's j-th call is slot j; labels given by
        :meth:`set_labels` (for the concatenated frames) are sliced per chunk. :meth:`end_chunks`
        turns the chunks' statistics into one row per utterance, exactly as the definitions give
        them for the utterance's whole (block-diagonal) map."""
        if self._chunks is not None:
            raise RuntimeError("satkern.Patch.begin_chunks: the previous chunked forward did not end")
        slots = [(torch.as_tensor(u, dtype=torch.int64), torch.as_tensor(o, dtype=torch.int64),
                  torch.as_tensor(f, dtype=torch.int64)) for u, o, f in slots]
        total = torch.zeros(batch, dtype=torch.int64)
        for u, _, f in slots:
            total.index_add_(0, u, f)
        self._chunks = {"slots": slots, "total": total, "calls": {}, "rows": {}, "labels": self._labels,
                        "device": torch.device("cpu")}

    def end_chunks(self) -> None:
        """Merge the chunks of the forward that :meth:`begin_chunks` announced (see there)."""
        plan, self._chunks = self._chunks, None
        if plan is None:
            raise RuntimeError("satkern.Patch.end_chunks without begin_chunks")
        total = plan["total"]
        if any(len(plan["rows"].get(l, [])) != len(plan["slots"]) for l in range(self.num_layers)):
            return  # an interrupted forward: nothing recorded (metrics would see unequal layers)
        for layer in range(self.num_layers):
            parts = plan["rows"][layer]  # per slot: {metric: [b_j, H]} on the device
            dev = next((t.device for p in parts for t in p.values()), plan["device"])
            self._lengths.setdefault(layer, []).append(total.to(dev))
            bad = torch.zeros(int(total.numel()), self.num_heads, dtype=torch.bool, device=plan["device"])
            for (utts, _, _), flags in zip(plan["slots"], plan.get("nan", {}).get(layer, [])):
                bad[utts.to(bad.device)] |= flags.to(bad.device)
            self._nan.setdefault(layer, []).append(bad)
            if not self._which:
                continue
            merged = merge_chunk_metrics([(u, f) for u, _, f in plan["slots"]], parts, total, self._which)
            rows = self._rows.setdefault(layer, {w: [] for w in self._which})
            for w in self._which:
                rows[w].append(merged[w].to(torch.float32))
        if self._which and bool((total == 0).any()):
            warnings.warn("satkern.patch: utterances of length 0 have no metrics (NaN)", stacklevel=3)
        W = plan["labels"]
        if W is not None:  # the uniform-attention baseline, once, over each utterance's whole frames
            self._accumulate_prm_base(W, total.to(W.device))
            self._labels = None
            self._labels_used = set()

    def set_labels(self, W: torch.Tensor) -> None:
        """Frame label weights ``[B, T, Y]`` (model frame rate) for the next forward only.

        Each layer then adds sum_u P'_u to ``prm_counts[layer]`` (P'_u = (1/T) W^T label_mass,
        from the kernel's ``label_mass``), and the forward adds sum_u P_U,u
        = (1/T^2) (W^T 1)(1^T W) to ``prm_base``; rows past an utterance's length are ignored,
        utterances with T = 0 are skipped. The labels are cleared once every layer used them.
        """
        if not isinstance(W, torch.Tensor) or W.dim() != 3 or not W.dtype.is_floating_point:
            raise ValueError("satkern.Patch.set_labels: W must be a float tensor [B, T_model, Y]; got "
                             + (f"shape {tuple(W.shape)}, dtype {W.dtype}" if isinstance(W, torch.Tensor)
                                else type(W).__name__))
        if self.prm_counts is not None and W.shape[-1] != self.prm_counts.shape[-1]:
            raise ValueError(f"satkern.Patch.set_labels: {W.shape[-1]} labels, but the PRM sums so far have "
                             f"{self.prm_counts.shape[-1]}; call reset() to change the label set")
        self._labels = W
        self._labels_used = set()

    # ------------------------------------------------------------------ host-side caches
    def lengths_from_mask(self, mask: Optional[torch.Tensor], batch: int, frames: int, *,
                          valid_value=None) -> Optional[torch.Tensor]:
        """:func:`lengths_from_mask` (of ``mask == valid_value`` when given), cached for the mask tensor: every
        layer of a forward gets the same mask object, so its checks (which read the mask, i.e. wait for the
        device) run once per forward, not once per layer. Returns the same lengths object on a hit."""
        if mask is None:
            return None
        c = self._mask_cache
        if (c is not None and c[0] is mask and c[1] == _version(mask) and c[2] == batch and c[3] == frames
                and c[4] == valid_value):
            return c[5]
        lengths = lengths_from_mask(mask if valid_value is None else mask.eq(valid_value), batch, frames)
        self._mask_cache = (mask, _version(mask), batch, frames, valid_value, lengths)
        return lengths

    def _host_lengths(self, lengths: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """CPU copy of ``lengths`` (the call's, possibly on the GPU), cached for the tensor object: one device
        read per distinct lengths tensor (once per forward), none for CPU lengths."""
        if lengths is None:
            return None
        if not isinstance(lengths, torch.Tensor):
            return torch.as_tensor(lengths, dtype=torch.int64)
        if lengths.device.type == "cpu":
            return lengths
        c = self._host_cache
        if c is not None and c[0] is lengths and c[1] == _version(lengths):
            return c[2]
        host = lengths.to("cpu", torch.int64)
        self._host_cache = (lengths, _version(lengths), host)
        return host

    def _keep_on(self, layer: int, device: torch.device):
        """(head_mask on ``device``, kept head indices on ``device``) of a layer, copied once per device."""
        keep = self._keep[layer]
        if keep is None:
            return None, None
        key = (layer, device)
        if key not in self._device_keep:
            self._device_keep[key] = (keep.to(device), keep.nonzero().flatten().to(device))
        return self._device_keep[key]

    # ------------------------------------------------------------------ the attention call
    def run(self, module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
            lengths: Optional[torch.Tensor], scale: Optional[float], bias: Optional[torch.Tensor] = None,
            fill_padded: bool = True) -> torch.Tensor:
        """satkern attention for one module's call: ``[B,H,T,D]`` in, context ``[B,H,T,D]`` out."""
        layer = int(module.layer_index) if module in self._shared else self.layer_of[module]
        if not 0 <= layer < self.num_layers:
            raise RuntimeError(f"satkern.Patch: {type(module).__name__} reports layer {layer} of {self.num_layers}")
        B, H, T, D = q.shape
        keep = self._keep[layer]
        span = self._spans[layer]
        W = self._labels
        chunk = None
        if self._chunks is not None:  # slot j of a chunked forward: this layer's j-th call
            j = self._chunks["calls"].get(layer, 0)
            self._chunks["calls"][layer] = j + 1
            if j >= len(self._chunks["slots"]):
                raise RuntimeError(f"satkern.Patch: layer {layer} ran more often than the {len(self._chunks['slots'])} "
                                   f"announced chunk slots")
            chunk = self._chunks["slots"][j]
            W = None if self._chunks["labels"] is None else _slice_chunk_labels(self._chunks["labels"], chunk, T)
        if W is not None and (W.shape[0] != B or W.shape[1] != T):
            raise ValueError(f"satkern.Patch: labels of shape {tuple(W.shape)} do not fit layer {layer}'s "
                             f"batch of {B} x {T} attention frames")
        if W is not None and W.device != q.device:  # moved once per forward, not once per layer
            W = W.to(device=q.device)
            if chunk is None:
                self._labels = W
        label_weights = W
        head_mask, heads = self._keep_on(layer, q.device)
        host_lengths = self._host_lengths(lengths)
        res = attention(q, k, v, lengths=lengths, scale=scale, bias=bias, stats=self.stats, span=span,
                        span_mode=self.span_mode, head_mask=head_mask, label_weights=label_weights,
                        backend=self.backend)
        self.backends_used.add(res.backend)
        out = res.out
        if fill_padded and host_lengths is not None and B and bool((host_lengths < T).any()):
            if out.requires_grad:
                out = out.clone()
            scale_f = float(D) ** -0.5 if scale is None else float(scale)
            bias_full = None if bias is None else bias.expand(B, H, T, T)
            out = _fill_padded_rows(out, q, k, v, host_lengths, scale_f, bias_full, heads, span,
                                    self.span_mode)
        if self.head_gates is not None:  # xi_h multiplies head h's output (padded rows included)
            gate = self.head_gates[layer].to(device=out.device, dtype=out.dtype)
            out = out * gate[None, :, None, None]
        if chunk is not None:
            self._record_chunk(layer, res, W, chunk)
        else:
            self._record(layer, res, W, host_lengths)
        return out

    def _record_chunk(self, layer: int, res, W: Optional[torch.Tensor], chunk) -> None:
        """One slot of a chunked forward: keep the chunk's metrics for :meth:`end_chunks`; add its
        phoneme-relation terms with each utterance's whole length (P'_u = (1/T_u) sum_chunks W^T A W)."""
        if self._which:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # empty chunks: NaN, and left out of the merge
                m = head_metrics(res, lengths=res.lengths, which=self._which)
            self._chunks["rows"].setdefault(layer, []).append({w: getattr(m, w).detach() for w in self._which})
        else:
            self._chunks["rows"].setdefault(layer, []).append({})
        self._chunks.setdefault("nan", {}).setdefault(layer, []).append(self._nan_rows(layer, res))
        self._chunks["device"] = res.lengths.device
        if W is not None:
            total = self._chunks["total"][chunk[0]].to(res.lengths.device)
            self._accumulate_prm_counts(layer, res, W, total)

    def _nan_rows(self, layer: int, res) -> torch.Tensor:
        """``[B, H]`` bool: the head has a NaN valid row (a NaN query poisons the head's colmass, G and
        V, as the definitions give); pruned heads (NaN by convention) excluded. Stays on the device."""
        B, H, T = res.lse.shape
        valid = torch.arange(T, device=res.lse.device)[None, None, :] < res.lengths.to(res.lse.device)[:, None, None]
        bad = (torch.isnan(res.lse) & valid).any(-1)
        keep = self._keep[layer]
        if keep is not None:
            bad = bad & keep.to(device=bad.device, dtype=torch.bool).expand(B, H)
        return bad

    def _record(self, layer: int, res, W: Optional[torch.Tensor], host_lengths=None) -> None:
        lengths = res.lengths
        if layer not in self._lengths:
            self._lengths[layer] = []
        self._lengths[layer].append(lengths.detach())  # kept on the device: no sync per layer
        self._nan.setdefault(layer, []).append(self._nan_rows(layer, res))
        if self._which:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # empty utterances: NaN, warned once below
                m = head_metrics(res, lengths=lengths, which=self._which, warn_empty=False)
            rows = self._rows.setdefault(layer, {w: [] for w in self._which})
            for w in self._which:
                rows[w].append(getattr(m, w).detach().to(torch.float32))
            if layer == 0 and host_lengths is not None and bool((host_lengths == 0).any()):  # host values
                warnings.warn("satkern.patch: utterances of length 0 have no metrics (NaN)", stacklevel=4)
        if W is not None:
            self._accumulate_prm(layer, res, W)

    def _ensure_prm(self, Y: int) -> None:
        if self.prm_counts is None:
            self.prm_counts = torch.zeros(self.num_layers, self.num_heads, Y, Y, dtype=torch.float64)
            self.prm_base = torch.zeros(Y, Y, dtype=torch.float64)

    @staticmethod
    def _valid_labels(W: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``W`` as float64 with the rows past each utterance's length zeroed."""
        T = W.shape[1]
        valid = (torch.arange(T, device=lengths.device)[None, :] < lengths[:, None])  # [B, T]
        return torch.where(valid[..., None], W.to(device=lengths.device, dtype=torch.float64),
                           torch.zeros((), dtype=torch.float64, device=lengths.device))

    def _accumulate_prm_counts(self, layer: int, res, W: torch.Tensor, utterance_lengths: torch.Tensor) -> None:
        """``prm_counts[layer] += sum_u (1/T_u) W^T label_mass`` (T_u: the utterance's whole length,
        which is the call's length unless the call is one chunk of it)."""
        self._ensure_prm(W.shape[-1])
        Wm = self._valid_labels(W, res.lengths)
        nonempty = (res.lengths > 0) & (utterance_lengths > 0)
        Tf = torch.where(nonempty, utterance_lengths, torch.ones_like(utterance_lengths)).to(torch.float64)
        lm = res.label_mass.to(torch.float64)  # [B, H, T, Y]; 0 on padded rows, NaN on pruned heads
        p_prime = torch.einsum("btm,bhtn->bhmn", Wm, lm) / Tf[:, None, None, None]
        self.prm_counts[layer] += p_prime[nonempty].sum(0).to("cpu")

    def _accumulate_prm_base(self, W: torch.Tensor, lengths: torch.Tensor) -> None:
        """Once per forward: ``prm_base += sum_u P_U,u`` and the count of utterances in the maps."""
        self._ensure_prm(W.shape[-1])
        Wm = self._valid_labels(W, lengths)
        nonempty = lengths > 0
        Tf = torch.where(nonempty, lengths, torch.ones_like(lengths)).to(torch.float64)
        # an utterance with no labelled frame (all-zero rows: e.g. no alignment) adds nothing to the sums
        # and is not counted among the utterances of the relation maps
        labelled = nonempty & (Wm.sum((1, 2)) > 0)
        col = Wm.sum(1)  # [B, Y] = W^T 1
        base = col[:, :, None] * col[:, None, :] / (Tf * Tf)[:, None, None]
        self.prm_base += base[nonempty].sum(0).to("cpu")
        self.prm_utterances += int(labelled.sum())

    def _accumulate_prm(self, layer: int, res, W: torch.Tensor) -> None:
        self._accumulate_prm_counts(layer, res, W, res.lengths)
        if not self._labels_used:  # once per forward: the uniform-attention baseline
            self._accumulate_prm_base(W, res.lengths)
        self._labels_used.add(layer)
        if len(self._labels_used) == self.num_layers:
            self._labels = None
            self._labels_used = set()

    # ------------------------------------------------------------------ results
    @property
    def lengths(self) -> torch.Tensor:
        """Attention frames per utterance seen, int64 ``[U]``."""
        parts = self._lengths.get(0, [])
        return torch.cat(parts).cpu() if parts else torch.zeros(0, dtype=torch.int64)

    @property
    def nan_heads(self) -> torch.Tensor:
        """bool ``[U, L, H]``: the head's map had a NaN row for that utterance (its colmass, G and V
        are then NaN, as the definitions give; pruned heads are not counted)."""
        per_layer = [torch.cat(self._nan[l]).cpu() if self._nan.get(l) else torch.zeros(0, self.num_heads,
                                                                                        dtype=torch.bool)
                     for l in range(self.num_layers)]
        if len({t.shape[0] for t in per_layer}) != 1:
            return torch.zeros(0, self.num_layers, self.num_heads, dtype=torch.bool)
        return torch.stack(per_layer, dim=1)

    def _warn_nan_once(self) -> None:
        if self._nan_warned:
            return
        bad = self.nan_heads
        if not bool(bad.any()):
            return
        self._nan_warned = True
        pairs = sorted({(int(l), int(h)) for _, l, h in bad.nonzero().tolist()})
        shown = ", ".join(f"layer {l} head {h}" for l, h in pairs[:4]) + (
            f" and {len(pairs) - 4} more" if len(pairs) > 4 else "")
        warnings.warn(f"satkern.patch: NaN in the attention of {shown} for {int(bad.any(-1).any(-1).sum())} "
                      f"utterance(s): a NaN query row makes that head's colmass, G and V NaN (as the definitions "
                      f"give); check the inputs and weights (Patch.nan_heads says where)", RuntimeWarning,
                      stacklevel=3)

    @property
    def metrics(self) -> HeadMetrics:
        """Per-utterance head metrics, each float32 ``[U, L, H]`` (``None`` if not asked for).
        Warns once per patch when some head had a NaN row (:attr:`nan_heads`)."""
        out = HeadMetrics()
        self._warn_nan_once()
        if not self._which:
            return out
        counts = {l: sum(int(t.shape[0]) for t in self._lengths.get(l, [])) for l in range(self.num_layers)}
        if len(set(counts.values())) != 1:
            raise RuntimeError(f"satkern.Patch.metrics: layers saw different numbers of utterances {counts} "
                               f"(a forward was interrupted, or layers were skipped, e.g. LayerDrop)")
        for w in self._which:
            per_layer = []
            for l in range(self.num_layers):
                parts = self._rows.get(l, {}).get(w, [])
                per_layer.append(torch.cat(parts).cpu() if parts else torch.zeros(0, self.num_heads))
            setattr(out, w, torch.stack(per_layer, dim=1))
        return out

    def head_importance(self, normalized: bool = True) -> torch.Tensor:
        """Gradient head importance (Michel et al. 2019; METRICS.md "Gradient importance"), float32 ``[L, H]``.

        I_h = abs(sum dL/dxi_h): the absolute value of the head gate's gradient, accumulated over every
        ``loss.backward()`` since the patch was made (or since :meth:`zero_importance`). ``normalized``
        (the default, as Michel et al. do): each layer's scores divided by their L2 norm (a layer whose
        scores are all 0 stays 0); ``normalized=False``: the raw I_h. Needs ``head_gates=True``.
        """
        if self.head_gates is None:
            raise RuntimeError("satkern.Patch.head_importance: the patch has no head gates; make it with "
                               "satkern.patch(model, head_gates=True)")
        grad = self.head_gates.grad
        if grad is None:
            raise RuntimeError("satkern.Patch.head_importance: the head gates have no gradient yet; run "
                               "loss.backward() through the patched model first")
        raw = grad.detach().abs().to(device="cpu", dtype=torch.float32)
        if not normalized:
            return raw
        norm = raw.norm(dim=-1, keepdim=True)
        return torch.where(norm > 0, raw / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(raw))

    def zero_importance(self) -> None:
        """Forget the accumulated head-gate gradients (start a new importance estimate)."""
        if self.head_gates is not None:
            self.head_gates.grad = None

    # ------------------------------------------------------------------ removal
    def remove(self) -> None:
        """Undo every change the patch made to the model (idempotent)."""
        if self._removed:
            return
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        for m in self._modules:
            if _OWNER.get(m) is self:
                del _OWNER[m]
        self._removed = True

    @property
    def active(self) -> bool:
        return not self._removed

    def __enter__(self) -> "Patch":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if not self._removed else "removed"
        return (f"<satkern.Patch {state}: {type(self.model).__name__}, {getattr(self, 'num_layers', '?')} layers x "
                f"{getattr(self, 'num_heads', '?')} heads, stats={sorted(self.stats)}, backend={self.backend!r}>")



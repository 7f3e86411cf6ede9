"""The model-independent part of patching: :class:`Patch` = routing + refinement + exact undo.

This module knows no model family and imports no adapter. An adapter (``hf.py``, ``s3prl.py``;
:class:`~satkern.patching.adapter.Adapter`) finds the self-attention modules of a model, the patch is
built over them in model order, and the adapter reroutes each module's attention core to
:meth:`Patch.run` (every change it makes goes through :meth:`Patch.set_instance_attr` or
:meth:`Patch.on_remove`, so :meth:`Patch.remove` restores the model exactly).

:meth:`Patch.run` resolves the layer, calls :func:`satkern.attention` with the layer's refinement
(pruned heads, span), recomputes padded query rows as the model would (:mod:`.refine`), applies the
head gates, and hands the call to the observers (:mod:`.observers`). What the patch reports
(``metrics``, ``lengths``, ``nan_heads``, phoneme-relation sums) is recorded by observers it installs
itself (:mod:`.capture`, :mod:`.relations`). No attention map is materialized here.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from ..metrics import METRIC_STATS, HeadMetrics
from ..ops import SPAN_MODES, STAT_NAMES, attention, backends
from .capture import HeadMetricsCapture, NanCapture
from .masks import lengths_from_mask
from .observers import ChunkPlan, ChunkSlot, FunctionObserver, LayerCall, Observer, checked_stats
from .refine import fill_padded_rows, parse_prune, parse_span
from .relations import PhonemeRelationCapture

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


def _version(t: torch.Tensor) -> int:
    """In-place modification counter of ``t`` (-1 for inference tensors, which keep none; the caches then go
    by the tensor object alone, which they hold, so it cannot be freed and its id reused)."""
    return -1 if t.is_inference() else t._version


class Patch:
    """A model rerouted through satkern; made by :func:`satkern.patch`.

    Attributes (read-only views of what the observers recorded):

    * ``metrics``: :class:`~satkern.HeadMetrics` (G, V, D, W), each float32 ``[U, L, H]`` for
      the ``U`` utterances seen so far, ``L`` attention layers in model order, ``H`` heads; a
      metric whose statistic was not asked for is ``None``; NaN for pruned heads and empty
      utterances.
    * ``lengths``: int64 ``[U]``, attention frames per utterance.
    * ``prm_counts`` ``[L, H, Y, Y]``, ``prm_base`` ``[Y, Y]`` (float64), ``prm_utterances``:
      sums of P'_u and P_U,u over the utterances given labels (:meth:`set_labels`).
    * ``nan_heads``: bool ``[U, L, H]``, heads whose map had a NaN valid row.
    * ``num_layers``, ``num_heads``, ``layer_of`` (module -> layer index), ``stats`` (the statistics asked
      for), ``metric_names`` (the metrics they give, e.g. ``("G", "D")``), ``observers``.
    * ``head_gates`` (with ``head_gates=True``): an ``[L, H]`` ``nn.Parameter`` of ones (the model's
      parameter dtype and device),
      multiplied into each head's attention output (Michel et al. 2019's xi); after ``loss.backward()``
      :meth:`head_importance` reads its gradient. ``None`` without head gates.

    Use as a context manager or call :meth:`remove`; removal restores the model exactly.

    ``layers``: the attention modules in model order, one per layer; a module that serves several
    layers (AudioALBERT's ``share_layer``) appears once per layer and must say which layer is running
    through its ``layer_index`` attribute (set by its encoder before each call). ``supported`` names
    what the adapters can patch, for the error when ``layers`` is empty.
    """

    def __init__(self, model: nn.Module, layers: Sequence[nn.Module], *, stats: Iterable[str] = STAT_NAMES,
                 prune=None, span=None, span_mode: str = "zero", backend: str = "auto", head_gates: bool = False,
                 observers: Iterable = (), supported: str = ""):
        stats = checked_stats(stats, "stats")
        if span_mode not in SPAN_MODES:
            raise ValueError(f"satkern.patch: argument 'span_mode' must be one of {SPAN_MODES}; got {span_mode!r}")
        if not isinstance(backend, str):
            raise TypeError(f"satkern.patch: argument 'backend' must be a string; got {type(backend).__name__}")
        if backend != "auto" and backend not in backends():
            raise ValueError(f"satkern.patch: argument 'backend' must be 'auto' or one of {sorted(backends())}; "
                             f"got {backend!r}")
        if not isinstance(head_gates, bool):
            raise TypeError(f"satkern.patch: argument 'head_gates' must be a bool; got {type(head_gates).__name__}")
        self.model = model
        self.stats = frozenset(stats)
        self.span_mode = span_mode
        self.backend = backend
        self.metric_names = tuple(m for m, s in METRIC_STATS.items() if s in self.stats)
        self.backends_used: set = set()  # names of the satkern backends that ran (for reports)
        self._undo: List[Callable[[], None]] = []
        self._removed = False
        # host-side caches, so that a forward reads device values at most once (not once per layer):
        self._mask_cache = None  # (mask, mask._version, batch, frames, how, lengths) of the last mask seen
        self._host_cache = None  # (lengths, lengths._version, CPU copy) of the last lengths seen
        self._device_keep: Dict[tuple, tuple] = {}  # (layer, device) -> (head_mask, kept head indices)
        self._chunks: Optional[ChunkPlan] = None  # between begin_chunks and end_chunks
        self._register_layers(layers, supported)
        self._keep = parse_prune(prune, self.num_layers, self.num_heads)
        self._spans = parse_span(span, self.num_layers)
        self.head_gates: Optional[nn.Parameter] = None
        if head_gates:
            # on the model's device, in its parameter dtype (float32 for a model without float parameters)
            first = next((p for p in self.model.parameters() if p.dtype.is_floating_point), None)
            device = first.device if first is not None else None
            dtype = first.dtype if first is not None else torch.float32
            self.head_gates = nn.Parameter(torch.ones(self.num_layers, self.num_heads, device=device, dtype=dtype))
        self._observers: List[Observer] = []
        self._op_stats = self.stats
        self._capture = self.observe(HeadMetricsCapture(self.metric_names))
        self._nan = self.observe(NanCapture())
        self._relations = self.observe(PhonemeRelationCapture())
        for obs in observers:
            self.observe(obs)
        for m in self._distinct:
            _OWNER[m] = self

    def _register_layers(self, layers: Sequence[nn.Module], supported: str) -> None:
        self._distinct: List[nn.Module] = []  # distinct patched modules
        self.layer_of: Dict[nn.Module, int] = {}  # module -> its (first) layer
        self._shared: set = set()  # modules serving several layers (layer read from module.layer_index)
        for slot, m in enumerate(layers):
            if m in _OWNER:
                raise RuntimeError(f"satkern.patch: {type(m).__name__} is already patched; remove the other "
                                   f"patch first")
            if m in self.layer_of:
                if not hasattr(m, "layer_index"):
                    raise TypeError(f"satkern.patch: {type(m).__name__} serves several layers but has no "
                                    f"layer_index attribute to tell them apart")
                self._shared.add(m)
            else:
                self.layer_of[m] = slot
                self._distinct.append(m)
        if not self._distinct:
            raise TypeError(f"satkern.patch: found no supported self-attention module in "
                            f"{type(self.model).__name__}" + (f"; supported: {supported}" if supported else ""))
        heads = sorted({num_heads_of(m) for m in self._distinct})
        if len(heads) != 1:
            raise ValueError(f"satkern.patch: layers have different head counts {heads}; unsupported")
        self.num_layers = len(layers)
        self.num_heads = heads[0]

    # ------------------------------------------------------------------ observers
    def observe(self, observer: Union[Observer, Callable[[LayerCall], None]], *, stats: Iterable[str] = ()):
        """Add an observer: an :class:`~satkern.patching.Observer`, or a function ``fn(call)`` called after
        every layer call with its :class:`~satkern.patching.LayerCall` (``stats``: the statistics it needs in
        ``call.result``). Returns the observer (pass it to :meth:`unobserve` to stop)."""
        if not isinstance(observer, Observer):
            if not callable(observer):
                raise TypeError(f"satkern.Patch.observe: expected an Observer or a function of one LayerCall; "
                                f"got {type(observer).__name__}")
            observer = FunctionObserver(observer, stats)
        elif tuple(stats):
            raise TypeError("satkern.Patch.observe: 'stats' is for functions; an Observer declares its own .stats")
        checked_stats(observer.stats, "observer stats")
        observer.attach(self)
        self._observers.append(observer)
        self._update_op_stats()
        return observer

    def unobserve(self, observer) -> None:
        """Stop handing calls to ``observer`` (as returned by :meth:`observe`)."""
        self._observers.remove(observer)
        self._update_op_stats()

    def _update_op_stats(self) -> None:
        self._op_stats = self.stats.union(*(o.stats for o in self._observers))

    @property
    def observers(self) -> tuple:
        """Every observer, in the order added (the patch's own first)."""
        return tuple(self._observers)

    def reset(self) -> None:
        """Forget the accumulated metrics, lengths and PRM sums (and pending labels): every observer's
        :meth:`~satkern.patching.Observer.reset`."""
        self._chunks = None
        for obs in self._observers:
            obs.reset()

    # ------------------------------------------------------------------ refinement (read-only)
    def refinement(self, layer: int):
        """``(kept heads, span)`` of ``layer``: bool ``[H]`` (``None``: every head kept), frames (``None``: no span)."""
        keep = self._keep[layer]
        return (None if keep is None else keep.clone()), self._spans[layer]

    def refines(self, layer: int) -> bool:
        """Whether the patch changes ``layer``'s attention (a pruned head or a span)."""
        return self._keep[layer] is not None or self._spans[layer] is not None

    # ------------------------------------------------------------------ chunked utterances
    def begin_chunks(self, batch: int, slots) -> None:
        """A model is about to run each of ``batch`` utterances as independent attention sequences
        (chunks, e.g. s3prl's ``sequence_length`` pieces), as one forward per *slot*: slot ``j`` is
        ``(utterances [b_j], frame offsets [b_j], frames [b_j])``, the j-th chunk of each listed
        utterance, whose model frames ``offset .. offset + frames`` of the concatenated output it
        computes. Until :meth:`end_chunks`, each layer's j-th call is slot j (``call.chunk``); the
        observers see the plan at both ends and turn the chunks' records into one per utterance,
        exactly as the definitions give them for the utterance's whole (block-diagonal) map."""
        if self._chunks is not None:
            raise RuntimeError("satkern.Patch.begin_chunks: the previous chunked forward did not end")
        parts = [tuple(torch.as_tensor(x, dtype=torch.int64) for x in slot) for slot in slots]
        total = torch.zeros(batch, dtype=torch.int64)
        for u, _, f in parts:
            total.index_add_(0, u, f)
        plan = ChunkPlan(batch, [ChunkSlot(j, u, o, f, total[u]) for j, (u, o, f) in enumerate(parts)], total,
                         self.num_layers)
        self._chunks = plan
        for obs in self._observers:
            obs.begin_chunks(plan)

    def end_chunks(self) -> None:
        """End the chunked forward that :meth:`begin_chunks` announced (see there)."""
        plan, self._chunks = self._chunks, None
        if plan is None:
            raise RuntimeError("satkern.Patch.end_chunks without begin_chunks")
        for obs in self._observers:
            obs.end_chunks(plan)

    def _next_slot(self, layer: int) -> Optional[ChunkSlot]:
        plan = self._chunks
        if plan is None:
            return None
        j = plan.started.get(layer, 0)  # slot j of a chunked forward: this layer's j-th call
        plan.started[layer] = j + 1
        if j >= len(plan.slots):
            raise RuntimeError(f"satkern.Patch: layer {layer} ran more often than the {len(plan.slots)} "
                               f"announced chunk slots")
        return plan.slots[j]

    # ------------------------------------------------------------------ phoneme relations
    def set_labels(self, W: torch.Tensor) -> None:
        """Frame label weights ``[B, T, Y]`` (model frame rate) for the next forward only.

        Each layer then adds sum_u P'_u to ``prm_counts[layer]`` (P'_u = (1/T) W^T label_mass,
        from the kernel's ``label_mass``), and the forward adds sum_u P_U,u
        = (1/T^2) (W^T 1)(1^T W) to ``prm_base``; rows past an utterance's length are ignored,
        utterances with T = 0 are skipped. The labels are cleared once every layer used them.
        """
        self._relations.set_labels(W)

    @property
    def prm_counts(self) -> Optional[torch.Tensor]:
        return self._relations.prm_counts

    @property
    def prm_base(self) -> Optional[torch.Tensor]:
        return self._relations.prm_base

    @property
    def prm_utterances(self) -> int:
        return self._relations.prm_utterances

    # ------------------------------------------------------------------ host-side caches (adapters)
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
        """satkern attention for one module's call: ``[B,H,T,D]`` in, context ``[B,H,T,D]`` out.

        What an adapter's rerouted attention core calls (``owner(module).run(...)``): ``lengths`` int ``[B]``
        or ``None``, ``scale`` (``None``: ``D ** -0.5``), ``bias`` broadcastable to ``[B, H, T, T]``;
        ``fill_padded``: recompute padded query rows as the model's eager attention does.
        """
        layer = int(module.layer_index) if module in self._shared else self.layer_of[module]
        if not 0 <= layer < self.num_layers:
            raise RuntimeError(f"satkern.Patch: {type(module).__name__} reports layer {layer} of {self.num_layers}")
        B, H, T, D = q.shape
        chunk = self._next_slot(layer)
        head_mask, heads = self._keep_on(layer, q.device)
        call = LayerCall(layer=layer, module=module, q=q, k=k, v=v, lengths=lengths,
                         host_lengths=self._host_lengths(lengths),
                         scale=float(D) ** -0.5 if scale is None else float(scale), bias=bias,
                         span=self._spans[layer], span_mode=self.span_mode, head_mask=head_mask, chunk=chunk)
        call.label_weights = self._label_weights(call)
        for obs in self._observers:
            obs.before(call)
        res = attention(q, k, v, lengths=lengths, scale=scale, bias=bias, stats=self._op_stats, span=call.span,
                        span_mode=self.span_mode, head_mask=head_mask, label_weights=call.label_weights,
                        backend=self.backend)
        self.backends_used.add(res.backend)
        call.result = res
        call.out = self._refined_output(call, heads, fill_padded)
        for obs in reversed(self._observers):
            obs.after(call)
        if chunk is not None:
            self._chunks.finished[layer] = self._chunks.finished.get(layer, 0) + 1
        return call.out

    def _label_weights(self, call: LayerCall) -> Optional[torch.Tensor]:
        given = [(obs, W) for obs in self._observers for W in (obs.label_weights(call),) if W is not None]
        if len(given) > 1:
            raise RuntimeError(f"satkern.Patch: {len(given)} observers give label weights for one call "
                               f"({', '.join(type(o).__name__ for o, _ in given)}); the op takes one set")
        return given[0][1] if given else None

    def _refined_output(self, call: LayerCall, heads: Optional[torch.Tensor], fill_padded: bool) -> torch.Tensor:
        """The op's output with padded query rows as the model computes them and the head gates applied."""
        out = call.result.out
        B, H, T, _ = call.q.shape
        host = call.host_lengths
        if fill_padded and host is not None and B and bool((host < T).any()):
            if out.requires_grad:
                out = out.clone()
            bias_full = None if call.bias is None else call.bias.expand(B, H, T, T)
            out = fill_padded_rows(out, call.q, call.k, call.v, host, call.scale, bias_full, heads, call.span,
                                   self.span_mode)
        if self.head_gates is not None:  # xi_h multiplies head h's output (padded rows included)
            gate = self.head_gates[call.layer].to(device=out.device, dtype=out.dtype)
            out = out * gate[None, :, None, None]
        return out

    # ------------------------------------------------------------------ results
    @property
    def lengths(self) -> torch.Tensor:
        """Attention frames per utterance seen, int64 ``[U]``."""
        return self._capture.lengths

    @property
    def nan_heads(self) -> torch.Tensor:
        """bool ``[U, L, H]``: the head's map had a NaN row for that utterance (its colmass, G and V
        are then NaN, as the definitions give; pruned heads are not counted)."""
        return self._nan.flags()

    @property
    def metrics(self) -> HeadMetrics:
        """Per-utterance head metrics, each float32 ``[U, L, H]`` (``None`` if not asked for).
        Warns once per patch when some head had a NaN row (:attr:`nan_heads`)."""
        self._nan.warn_once()
        return self._capture.metrics()

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

    # ------------------------------------------------------------------ adapter API: changes and their undo
    def set_instance_attr(self, obj, name: str, value) -> None:
        """Set ``obj.<name> = value`` as an instance attribute; :meth:`remove` restores the former instance
        attribute, or deletes it when there was none (the class attribute shows again)."""
        had = name in obj.__dict__
        old = obj.__dict__.get(name)
        setattr(obj, name, value)

        def restore():
            if had:
                obj.__dict__[name] = old
            else:
                obj.__dict__.pop(name, None)

        self._undo.append(restore)

    def on_remove(self, undo: Callable[[], None]) -> None:
        """Register a step that undoes a change an adapter made; :meth:`remove` runs the steps last first."""
        self._undo.append(undo)

    def remove(self) -> None:
        """Undo every change the patch made to the model (idempotent)."""
        if self._removed:
            return
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        for m in self._distinct:
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

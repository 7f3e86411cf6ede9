"""One place that chooses a backend.

Each backend is a :class:`Backend` subclass that declares what it supports by
returning the reasons it cannot run a given call (an empty list means it can).
``backend="auto"`` takes the highest-priority backend with no reasons; naming a
backend that cannot run the call, or finding none for ``"auto"``, raises a
:class:`BackendUnavailable` listing every backend's reasons.

``auto``'s order is **static** (each backend's ``priority``) until measured GPU numbers exist: a tuning
table (``satkern/ops/tuning.json``, or :func:`set_tuning_table`) can order the backends per device, dtype,
head dim and length; no table is shipped yet, so :func:`auto_policy` says the priority is static.

Selection is cached: a backend's :meth:`Backend.reasons` may depend only on the structure of the call
(device, dtype, shape, which statistics / options are present, whether gradients are wanted), never on
tensor values, so the choice for one structure is reused by every later call with that structure
(a model's layers). The cache is cleared when a backend registers or a tuning table is set
(:func:`clear_selection_cache` after anything else that changes what a backend can run, e.g. the CUDA JIT).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import torch

from .contract import AttentionCall, AttentionResult


class BackendUnavailable(RuntimeError):
    """No backend (or not the one asked for) can run this call; the message says why."""


class Backend:
    """A backend of ``satkern.attention``.

    Subclasses set ``name`` and ``priority`` (higher wins under ``"auto"``) and
    implement :meth:`reasons` and :meth:`run`. Tests hold every backend to the rule in
    :mod:`satkern.ops.testing`: error against the float64 reference at most ~2x that of
    plain PyTorch in the same dtype.
    """

    name: str = ""
    priority: int = 0

    def reasons(self, call: AttentionCall) -> List[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, call: AttentionCall) -> AttentionResult:  # pragma: no cover - interface
        raise NotImplementedError

    def priority_for(self, call: AttentionCall) -> int:
        """Priority for this particular call (backends may prefer shapes they are fast on)."""
        return self.priority


_BACKENDS: Dict[str, Backend] = {}


_SELECTION_CACHE: Dict[tuple, Backend] = {}
_SELECTION_CACHE_MAX = 4096  # distinct call structures kept (a corpus run sees one per length bucket)


def clear_selection_cache() -> None:
    """Forget cached backend choices (after anything that changes what a backend can run)."""
    _SELECTION_CACHE.clear()


def _selection_key(call: AttentionCall, backend: str) -> tuple:
    """Everything a backend's reasons / priority may depend on (structure only, no values)."""
    q = call.q
    lw = call.label_weights
    grad = torch.is_grad_enabled() and (q.requires_grad or call.k.requires_grad or call.v.requires_grad)
    return (backend, q.device, q.dtype, tuple(q.shape), call.stats, call.span is None, call.span_mode,
            call.bias is None, call.head_mask is None, None if lw is None else tuple(lw.shape), grad,
            os.environ.get("TRITON_INTERPRET", ""))


def register_backend(backend: Backend) -> Backend:
    if not backend.name:
        raise ValueError("a backend needs a name")
    _BACKENDS[backend.name] = backend
    clear_selection_cache()
    return backend


# ---------------------------------------------------------------- the tuning-table hook
TUNING_TABLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuning.json")
TUNING_TABLE_VERSION = 1
_TUNING: Dict[str, object] = {"loaded": False, "table": None, "source": None}


def _check_table(table: dict, source: str) -> dict:
    """A tuning table: {"version": 1, "measured": "<device, date, commit>", "entries": [{"device": "NVIDIA
    H200" (CUDA device name; "cpu" for CPU), "dtype": "bfloat16", "head_dim": 64, "max_T": 1024 (entry
    applies to T <= max_T; omit for any T), "order": ["triton", "cuda"]}]}; the first entry that matches a
    call orders the backends it names (the others keep their static priority, after them)."""
    if not isinstance(table, dict) or table.get("version") != TUNING_TABLE_VERSION \
            or not isinstance(table.get("entries"), list):
        raise ValueError(f"satkern: tuning table {source} must be a dict with version {TUNING_TABLE_VERSION} "
                         f"and a list 'entries'")
    for e in table["entries"]:
        if not isinstance(e, dict) or not isinstance(e.get("order"), list) or "device" not in e:
            raise ValueError(f"satkern: tuning table {source}: each entry needs 'device' and a list 'order'; "
                             f"got {e!r}")
    return table


def set_tuning_table(table: Optional[dict]) -> None:
    """Use ``table`` (see :func:`_check_table`) for ``auto``; ``None`` goes back to static priorities."""
    _TUNING.update(loaded=True, table=None if table is None else _check_table(table, "(set_tuning_table)"),
                   source=None if table is None else "set_tuning_table()")
    clear_selection_cache()


def tuning_table() -> Optional[dict]:
    """The measured table ``auto`` uses, or ``None`` (static priorities). Read once from
    :data:`TUNING_TABLE_PATH` if that file exists."""
    if not _TUNING["loaded"]:
        table = None
        if os.path.exists(TUNING_TABLE_PATH):
            with open(TUNING_TABLE_PATH) as f:
                table = _check_table(json.load(f), TUNING_TABLE_PATH)
        _TUNING.update(loaded=True, table=table, source=TUNING_TABLE_PATH if table else None)
    return _TUNING["table"]


_DEVICE_NAMES: Dict[object, str] = {}


def _device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return device.type
    if device.index not in _DEVICE_NAMES:  # host-side query, cached (no device work)
        _DEVICE_NAMES[device.index] = torch.cuda.get_device_name(device)
    return _DEVICE_NAMES[device.index]


def _measured_order(call: AttentionCall) -> Optional[List[str]]:
    table = tuning_table()
    if table is None:
        return None
    B, H, T, D = call.shape
    name = _device_name(call.q.device)
    dtype = str(call.q.dtype).replace("torch.", "")
    for e in table["entries"]:
        if e["device"] != name or e.get("dtype", dtype) != dtype or e.get("head_dim", D) != D:
            continue
        if "max_T" in e and T > e["max_T"]:
            continue
        return list(e["order"])
    return None


def auto_policy() -> str:
    """How ``backend="auto"`` orders the backends, in words."""
    static = " > ".join(f"{b.name} ({b.priority})" for b in sorted(_BACKENDS.values(), key=lambda b: -b.priority))
    table = tuning_table()
    if table is None:
        return (f"static priorities, not measured: {static}; no tuning table ({TUNING_TABLE_PATH} absent): "
                f"GPU measurements will order the backends per shape once they exist")
    return (f"measured tuning table from {_TUNING['source']} ({table.get('measured', 'no provenance given')}), "
            f"{len(table['entries'])} entries; calls it does not cover use the static priorities: {static}")


def backends() -> Dict[str, Backend]:
    """All registered backends by name (available or not)."""
    return dict(_BACKENDS)


def select(call: AttentionCall, backend: str = "auto") -> Backend:
    if not isinstance(backend, str):
        raise TypeError(f"satkern.attention: argument 'backend' must be a string; got {type(backend).__name__}")
    key = _selection_key(call, backend)
    chosen = _SELECTION_CACHE.get(key)
    if chosen is None:
        chosen = _select_uncached(call, backend)
        if len(_SELECTION_CACHE) >= _SELECTION_CACHE_MAX:
            _SELECTION_CACHE.clear()
        _SELECTION_CACHE[key] = chosen
    return chosen


def _select_uncached(call: AttentionCall, backend: str) -> Backend:
    if backend != "auto":
        if backend not in _BACKENDS:
            raise ValueError(f"satkern.attention: argument 'backend' must be 'auto' or one of "
                             f"{sorted(_BACKENDS)}; got {backend!r}")
        chosen = _BACKENDS[backend]
        why = chosen.reasons(call)
        if why:
            raise BackendUnavailable(f"satkern.attention: backend {backend!r} cannot run this call: "
                                     + "; ".join(why))
        return chosen
    report = []
    fitting = []
    for b in _BACKENDS.values():
        why = b.reasons(call)
        if why:
            report.append(f"  {b.name}: " + "; ".join(why))
        else:
            fitting.append(b)
    if not fitting:
        raise BackendUnavailable("satkern.attention: no backend can run this call:\n" + "\n".join(report))
    order = _measured_order(call)
    if order:
        for name in order:
            for b in fitting:
                if b.name == name:
                    return b
    return max(fitting, key=lambda b: b.priority_for(call))


def availability(device: str = "cpu") -> Dict[str, str]:
    """For each backend, ``"available"`` or the reasons it cannot run a float32 call on ``device``."""
    import torch
    from .contract import validate

    x = torch.randn(1, 1, 4, 64, device=device)
    call = validate(x, x, x)
    out = {}
    for b in _BACKENDS.values():
        why = b.reasons(call)
        out[b.name] = "available" if not why else "; ".join(why)
    return out

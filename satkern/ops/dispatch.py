"""One place that chooses a backend.

Each backend is a :class:`Backend` subclass that declares what it supports by
returning the reasons it cannot run a given call (an empty list means it can).
``backend="auto"`` takes the highest-priority backend with no reasons; naming a
backend that cannot run the call, or finding none for ``"auto"``, raises a
:class:`BackendUnavailable` listing every backend's reasons.
"""
from __future__ import annotations

from typing import Dict, List

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


def register_backend(backend: Backend) -> Backend:
    if not backend.name:
        raise ValueError("a backend needs a name")
    _BACKENDS[backend.name] = backend
    return backend


def backends() -> Dict[str, Backend]:
    """All registered backends by name (available or not)."""
    return dict(_BACKENDS)


def select(call: AttentionCall, backend: str = "auto") -> Backend:
    if not isinstance(backend, str):
        raise TypeError(f"satkern.attention: argument 'backend' must be a string; got {type(backend).__name__}")
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

"""satkern: fused self-attention with on-the-fly attention statistics for speech transformers.

Public API::

    res = satkern.attention(q, k, v, lengths=..., stats=("entropy", "distance", "colmass", "maxweight"))
    m = satkern.head_metrics(res)       # HeadMetrics(G, V, D, W), each [B, H]
    A = satkern.attention_map(q, k)     # the maps [B, H, T, T] (float64), as the op defines them
    h = satkern.patch(model)            # a speech model's heads -> h.metrics [U, L, H]
    satkern.show("runs/analyze")        # the head explorer in a notebook (or satkern.show(model, waveforms))
"""
from .ops import (STAT_NAMES, SPAN_MODES, AttentionResult, Backend, BackendUnavailable, attention,
                  attention_map, availability, backends)
from .metrics import HeadMetrics, categorize, head_metrics
from .patching import Patch, patch

__version__ = "0.1.0"


def show(*args, **kwargs):
    """The interactive head explorer in a notebook: ``satkern.show(run_folder)`` (``satkern analyze
    --head-maps N``) or ``satkern.show(model, waveforms, names=..., phones=...)``; see
    :func:`satkern.report.notebook.show`. Imported on first use (the report layer sits above this module)."""
    from .report.notebook import show as _show

    return _show(*args, **kwargs)


__all__ = ["attention", "attention_map", "AttentionResult", "head_metrics", "HeadMetrics", "categorize", "backends",
           "availability", "patch", "Patch", "show", "Backend", "BackendUnavailable", "STAT_NAMES", "SPAN_MODES", "__version__"]

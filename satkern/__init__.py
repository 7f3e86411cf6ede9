"""satkern: fused self-attention with on-the-fly attention statistics for speech transformers.

Public API::

    res = satkern.attention(q, k, v, lengths=..., stats=("entropy", "distance", "colmass", "maxweight"))
    m = satkern.head_metrics(res)       # HeadMetrics(G, V, D, W), each [B, H]
"""
from .ops import (STAT_NAMES, SPAN_MODES, AttentionResult, Backend, BackendUnavailable, attention,
                  availability, backends)
from .metrics import HeadMetrics, categorize, head_metrics

__version__ = "0.1.0"

__all__ = ["attention", "AttentionResult", "head_metrics", "HeadMetrics", "categorize", "backends",
           "availability", "Backend", "BackendUnavailable", "STAT_NAMES", "SPAN_MODES", "__version__"]

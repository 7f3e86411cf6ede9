"""The op contract, its backends and the dispatch among them.

Importing this package registers every backend; each declares for itself whether
it can run a given call.
"""
from . import schema  # noqa: F401  (declares the torch.library ops)
from .contract import STAT_NAMES, SPAN_MODES, AttentionCall, AttentionResult, validate
from .dispatch import (Backend, BackendUnavailable, auto_policy, availability, backends, register_backend,  # noqa: E501
                       select)
from . import reference, cpu  # noqa: F401,E402  (register backends; order = tie-break order)
from . import cuda  # noqa: F401,E402  (CUDA kernels; reports why not where unavailable)
from . import triton as _triton  # noqa: F401,E402  (Triton kernels; imports triton lazily)
from . import autograd  # noqa: F401,E402  (register_autograd of the ops: gradients through every backend)
from .api import attention
from .maps import attention_map

__all__ = ["attention", "attention_map", "AttentionResult", "AttentionCall", "validate", "Backend", "BackendUnavailable",
           "backends", "availability", "auto_policy", "register_backend", "select", "STAT_NAMES", "SPAN_MODES"]

"""Loading the compiled extension (``satkern._C``) that registers the C++ implementations."""
from __future__ import annotations

import functools
from typing import Optional

from . import schema  # noqa: F401  (the schema must exist before the C++ registrations load)


@functools.lru_cache(maxsize=None)
def extension_error() -> Optional[str]:
    """``None`` when ``satkern._C`` is loaded, else why it is not."""
    try:
        from satkern import _C  # noqa: F401
    except ImportError as e:  # not built, or built against another torch
        return f"{e}; build it with `pip install --no-build-isolation -e .` (see README)"
    return None


def has_cuda_kernels() -> bool:
    """Whether the loaded extension was compiled with the CUDA sources."""
    if extension_error():
        return False
    from satkern import _C
    return bool(getattr(_C, "WITH_CUDA", False))

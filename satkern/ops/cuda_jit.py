"""Build the CUDA kernels just in time, for users who install satkern from source on a GPU box.

``pip install --no-build-isolation -e .`` on a machine with a CUDA torch and nvcc
already compiles the kernels into ``satkern._C``; use this module when that build
was CPU-only (e.g. the package was installed before the toolkit, or from a CPU
wheel)::

    import satkern
    from satkern.ops.cuda_jit import build_cuda_extension
    build_cuda_extension(verbose=True)     # compiles once, cached by torch
    satkern.attention(q, k, v, backend="cuda", stats=("entropy", "colmass"))

What the JIT module contains, and why: only the CUDA implementation
(``csrc/cuda/attention_cuda.cu``, which registers ``TORCH_LIBRARY_IMPL(satkern,
CUDA, ...)``) and ``csrc/module.cpp`` (the Python module shell, built with
``SATKERN_WITH_CUDA``). It does NOT contain ``csrc/cpu``: the installed
``satkern._C`` already registers the CPU kernel, and a second registration of the
same (op, dispatch key) from another library is an error or an override warning
in the dispatcher. For the same reason, building is refused (returns without
compiling) when ``satkern._C`` itself already carries the CUDA kernels.
``csrc/cuda/compile_check.cu`` is left out too (it is a compile-only test unit).

Environment: ``TORCH_CUDA_ARCH_LIST`` picks the architectures (default: the
visible GPU's); ``TORCH_EXTENSIONS_DIR`` the cache directory.
"""
from __future__ import annotations

import os
from typing import Optional

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CSRC = os.path.join(_ROOT, "csrc")
_MODULE_NAME = "satkern_cuda_jit"
_loaded = None


def is_loaded() -> bool:
    """Whether this process loaded the JIT-built CUDA kernels."""
    return _loaded is not None


def sources() -> list:
    """The source files of the JIT module (see the module docstring for what is left out)."""
    return [os.path.join(_CSRC, "module.cpp"), os.path.join(_CSRC, "cuda", "attention_cuda.cu")]


def build_cuda_extension(verbose: bool = False, build_directory: Optional[str] = None):
    """Compile (or load from torch's cache) the CUDA kernels and register them.

    Returns the loaded module, or ``None`` when ``satkern._C`` already has the CUDA
    kernels (nothing to do). Raises ``RuntimeError`` with the reason when this is not
    a CUDA build of torch or the sources are missing (an installed wheel without
    ``csrc/``).
    """
    global _loaded
    import torch

    from . import schema  # noqa: F401  (the op schema must exist before the registration runs)
    from .extension import has_cuda_kernels

    if _loaded is not None:
        return _loaded
    if has_cuda_kernels():
        return None
    if torch.version.cuda is None:
        raise RuntimeError(f"satkern: cannot build the CUDA kernels: torch {torch.__version__} is a CPU build")
    missing = [p for p in sources() if not os.path.exists(p)]
    if missing:
        raise RuntimeError("satkern: cannot build the CUDA kernels: sources not found (install from a source "
                           f"checkout): {missing}")
    from torch.utils.cpp_extension import load

    _loaded = load(
        name=_MODULE_NAME,
        sources=sources(),
        extra_include_paths=[_CSRC],
        extra_cflags=["-O3", "-DSATKERN_WITH_CUDA=1"],
        extra_cuda_cflags=["-O3", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr"],
        build_directory=build_directory,
        verbose=verbose,
        is_python_module=True,
    )
    from .dispatch import clear_selection_cache

    clear_selection_cache()  # the cuda backend can run calls now
    return _loaded

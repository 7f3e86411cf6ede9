"""The ``triton`` backend of ``satkern.attention`` (Triton kernels; CUDA, or CPU under TRITON_INTERPRET=1).

* ``kernels.py``: the ``@triton.jit`` kernels (pass 1 ``_attention_fwd_kernel``, pass 2 ``_colmass_kernel``);
* ``launch.py``: host launchers ``_attention_fwd`` / ``_colmass_fwd``, autotuning configs, test hooks;
* ``backend.py``: the implementation of ``satkern::fused_attention_triton`` and :class:`TritonBackend`;
* ``testing.py``: the plain-PyTorch baseline and 2x tolerance rule the tests share;
* ``aot_check.py``: compiles the kernels for sm_90 without a GPU (registers, spills, shared memory).

Importing this package registers the backend without importing triton (it is imported lazily).
"""
from .backend import TritonBackend, triton_error  # noqa: F401

__all__ = ["TritonBackend", "triton_error"]

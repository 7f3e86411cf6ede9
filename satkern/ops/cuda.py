"""The CUDA backend: hand-written CUDA kernels (``csrc/cuda``) behind ``torch.ops.satkern.fused_attention``.

The kernels are registered for the CUDA dispatch key of ``satkern::fused_attention``
by ``satkern._C`` when it was built with a CUDA torch and nvcc (``setup.py``), or by
the module :func:`satkern.ops.cuda_jit.build_cuda_extension` compiles on a GPU box.

float16 and bfloat16 run the products on tensor cores (WMMA, sm_80+); float32 is
exact-FMA (slower). Head dims 64 and 128 are compiled; other head dims are refused
here with a reason, so ``backend="auto"`` moves on to another backend.
Statistics come back in float32.
"""
from __future__ import annotations

from typing import List

import torch

from .contract import AttentionCall
from .dispatch import register_backend
from .schema import TorchOpBackend
from .extension import extension_error, has_cuda_kernels

SUPPORTED_HEAD_DIMS = (64, 128)  # must match kSupportedHeadDims in csrc/cuda/fused_attention.cuh


def cuda_kernels_error() -> str:
    """Empty when CUDA kernels of satkern::fused_attention are registered, else why not."""
    if has_cuda_kernels():
        return ""
    from . import cuda_jit

    if cuda_jit.is_loaded():
        return ""
    err = extension_error()
    if err:
        return f"C++ extension not built ({err})"
    return ("satkern._C was built without the CUDA kernels (a CPU torch or no nvcc at build time); rebuild on a "
            "machine with a CUDA torch and toolkit, or call satkern.ops.cuda_jit.build_cuda_extension()")


class CudaBackend(TorchOpBackend):
    """Hand-written CUDA: one fused online-softmax pass (out, lse, entropy, distance, maxweight,
    label_mass) and a deterministic column pass (colmass). float16/bfloat16/float32, D in {64, 128}."""

    name = "cuda"
    priority = 20
    compact_bias = False  # the CUDA binding takes the bias expanded to [B, H, T, T]
    dtypes = (torch.float16, torch.bfloat16, torch.float32)
    head_dims = SUPPORTED_HEAD_DIMS

    def reasons(self, call: AttentionCall) -> List[str]:
        why = []
        err = cuda_kernels_error()
        if err:
            why.append(err)
        if call.q.device.type != "cuda":
            why.append(f"needs CUDA tensors, got device {call.q.device}")
        if call.q.dtype not in self.dtypes:
            why.append(f"unsupported dtype {call.q.dtype} (CUDA kernels: float16, bfloat16, float32)")
        D = call.q.shape[-1]
        if D not in self.head_dims:
            why.append(f"head dim {D} has no compiled CUDA kernel (supported: "
                       f"{', '.join(map(str, self.head_dims))}); the triton, cpu or reference backends take it")
        B, H, _, _ = call.shape
        if B > 65535 or H > 65535:
            why.append(f"B = {B} and H = {H} must each be <= 65535 (CUDA grid limit)")
        return why


register_backend(CudaBackend())

"""The ``triton`` backend: ``satkern::fused_attention_triton`` implemented by the Triton kernels.

The op's schema and fake (shape-only) implementation live in ``satkern.ops.schema``; this module
registers the real implementation for CUDA (and for CPU, where it only runs under the Triton
interpreter, ``TRITON_INTERPRET=1``, so CI can test the kernels), and the :class:`TritonBackend`.

Importing this module never imports triton and never touches the GPU: triton is imported the first
time a call could run here.
"""
from __future__ import annotations

import functools
import os
from typing import List

import torch

from .. import schema
from ..contract import AttentionCall
from ..dispatch import register_backend

# Any head dim 1..256: the kernels tile the head dim with BLOCK_D = max(16, next power of two of D) and mask
# the padding (loads of the columns past D read 0, so they add 0 to every dot product and are never stored).
# 16 is the smallest tile a tensor-core dot takes; SAT-style small models have D = 16 (hidden 64, 4 heads).
MAX_HEAD_DIM = 256
SUPPORTED_HEAD_DIMS = tuple(range(1, MAX_HEAD_DIM + 1))
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_LABELS = 128  # label_mass accumulator: [BLOCK_M, next_pow2(L)] fp32 registers per program


@functools.lru_cache(maxsize=None)
def triton_error() -> str:
    """Empty when triton imports, else why not."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return f"{type(e).__name__}: {e}"
    return ""


@functools.lru_cache(maxsize=None)
def _capability_major(index) -> int:
    """Compute capability major of a CUDA device (cached: asked at call time, never at import)."""
    return torch.cuda.get_device_capability(torch.device("cuda", index) if index is not None else None)[0]


def _interpret_env() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


def _interpreting() -> bool:
    """The kernels run (or, not yet built, would run) in the Triton interpreter."""
    if not _interpret_env() or triton_error():
        return False
    from . import launch

    return launch.interpreting()


def _fused_attention_triton(q, k, v, lengths, bias, head_mask, label_weights, scale, span, renorm,
                            want_entropy, want_distance, want_colmass, want_maxweight):
    if q.device.type != "cuda" and not _interpreting():
        raise RuntimeError("satkern::fused_attention_triton runs on CUDA tensors, or on CPU tensors only "
                           "under the Triton interpreter (TRITON_INTERPRET=1 set before triton is imported)")
    from .launch import fused_attention_forward

    if bias is not None:  # the op takes the bias un-expanded (size 1 on broadcast dims); the kernel reads strides
        bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], q.shape[2])
    return fused_attention_forward(q, k, v, lengths, bias, head_mask, label_weights, scale, span, renorm,
                                   want_entropy, want_distance, want_colmass, want_maxweight)


torch.library.register_kernel("satkern::fused_attention_triton", ("cuda", "cpu"), _fused_attention_triton,
                              lib=schema._lib)


def _fused_attention_triton_backward(grad_out, grad_lse, grad_entropy, grad_distance, grad_colmass, q, k, v, out,
                                     lse, entropy, distance, lengths, bias, head_mask, scale, span, renorm,
                                     want_grad_bias):
    if q.device.type != "cuda" and not _interpreting():
        raise RuntimeError("satkern: the Triton backward runs on CUDA tensors, or on CPU tensors only under the "
                           "Triton interpreter (TRITON_INTERPRET=1 set before triton is imported)")
    from .backward import fused_attention_backward

    return fused_attention_backward(grad_out, grad_lse, grad_entropy, grad_distance, grad_colmass, q, k, v, out,
                                    lse, entropy, distance, lengths, bias, head_mask, scale, span, renorm,
                                    want_grad_bias)


# the triton op's backward (CUDA, or CPU under the interpreter), and the backward of the cuda backend's
# satkern::fused_attention on CUDA tensors (no hand-written CUDA backward: it is routed through Triton)
torch.library.register_kernel("satkern::fused_attention_triton_backward", ("cuda", "cpu"),
                              _fused_attention_triton_backward, lib=schema._lib)
torch.library.register_kernel("satkern::fused_attention_backward", "cuda", _fused_attention_triton_backward,
                              lib=schema._lib)


class TritonBackend(schema.TorchOpBackend):
    """Triton kernels: FlashAttention-2 style pass with on-the-fly entropy/distance/maxweight/label_mass,
    and a deterministic second pass for colmass. float16/bfloat16/float32, any D from 1 to 256.
    On CPU it runs only under TRITON_INTERPRET=1, and then never wins "auto"."""

    name = "triton"
    op_name = "fused_attention_triton"
    priority = 30  # above "cuda" (20): on CUDA tensors "auto" takes triton when it can run the call
    dtypes = SUPPORTED_DTYPES
    head_dims = SUPPORTED_HEAD_DIMS

    def reasons(self, call: AttentionCall) -> List[str]:
        why = []
        dev = call.q.device.type
        if dev == "cuda" or _interpret_env():
            err = triton_error()
            if err:
                why.append(f"triton not importable ({err})")
        if dev != "cuda" and not (dev == "cpu" and _interpreting()):
            why.append(f"needs CUDA tensors (CPU only under TRITON_INTERPRET=1), got device {call.q.device}")
        if call.q.dtype not in self.dtypes:
            why.append(f"unsupported dtype {call.q.dtype} (triton: float16, bfloat16, float32)")
        D = call.q.shape[-1]
        if not 1 <= D <= MAX_HEAD_DIM:
            why.append(f"unsupported head dim {D} (triton: 1 to {MAX_HEAD_DIM}, padded to a power of two >= 16)")
        if call.label_weights is not None and call.label_weights.shape[-1] > MAX_LABELS:
            why.append(f"label_weights with {call.label_weights.shape[-1]} labels (triton: at most {MAX_LABELS})")
        if dev == "cuda" and call.q.dtype == torch.bfloat16 and not why:
            major = _capability_major(call.q.device.index)
            if major < 8:
                why.append(f"bfloat16 needs compute capability >= 8.0 (got {major}.x)")
        return why

    def priority_for(self, call: AttentionCall) -> int:
        # interpreter runs are for testing: on CPU the cpu and reference backends win "auto"
        return self.priority if call.q.device.type == "cuda" else -10


register_backend(TritonBackend())

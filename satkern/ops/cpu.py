"""The CPU backend: the C++/OpenMP kernel in ``csrc/cpu`` behind ``torch.ops.satkern.fused_attention``."""
from __future__ import annotations

from typing import List

import torch

from .contract import AttentionCall
from .dispatch import register_backend
from .schema import TorchOpBackend
from .extension import extension_error


class CpuBackend(TorchOpBackend):
    """C++ (OpenMP) kernel on row blocks; never allocates T x T. float32/float64/bfloat16/float16."""

    name = "cpu"
    priority = 10
    dtypes = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

    def reasons(self, call: AttentionCall) -> List[str]:
        why = []
        err = extension_error()
        if err:
            why.append(f"C++ extension not built ({err})")
        if call.q.device.type != "cpu":
            why.append(f"needs CPU tensors, got device {call.q.device}")
        if call.q.dtype not in self.dtypes:
            why.append(f"unsupported dtype {call.q.dtype}")
        return why


register_backend(CpuBackend())

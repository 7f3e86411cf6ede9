"""Corpus sums of per-utterance head metrics and phoneme relation sums, mergeable across processes.

Everything is a float64 sum (order-independent to rounding), so a corpus split into any
batches, any order, any number of processes, or a killed-and-resumed run gives the same means.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

METRICS = ("G", "V", "D", "W")
_SCALARS = ("n_utterances", "frames", "audio_seconds", "prm_n")


class Accumulator:
    """Sums over utterances:

    * ``sums[m]`` / ``counts[m]`` ``[L, H]``: metric ``m`` (G, V, D, W) summed over utterances
      where it is defined (not NaN), and how many such utterances;
    * ``prm_counts`` ``[L, H, Y, Y]`` = sum_u P'_u, ``prm_base`` ``[Y, Y]`` = sum_u P_U,u,
      ``prm_n`` utterances in them;
    * ``n_utterances``, ``frames``, ``audio_seconds``.
    """

    def __init__(self, L: int, H: int, Y: int = 0, device="cpu"):
        self.L, self.H, self.Y = L, H, Y
        f = dict(dtype=torch.float64, device=device)
        self.sums = torch.zeros(len(METRICS), L, H, **f)
        self.counts = torch.zeros(len(METRICS), L, H, **f)
        self.computed = torch.zeros(len(METRICS), **f)  # 1 where the metric was asked for
        self.prm_counts = torch.zeros(L, H, Y, Y, **f)
        self.prm_base = torch.zeros(Y, Y, **f)
        self.scalars = torch.zeros(len(_SCALARS), **f)

    # -------------------------------------------------------------- scalars by name
    def __getattr__(self, name):
        if name in _SCALARS:
            return float(self.__dict__["scalars"][_SCALARS.index(name)])
        raise AttributeError(name)

    def check_shape(self, L: int, H: int, Y: int) -> None:
        if (L, H, Y) != (self.L, self.H, self.Y):
            raise ValueError(f"accumulator shape {(self.L, self.H, self.Y)} does not fit the model/labels {(L, H, Y)}")

    def add(self, metrics, lengths: torch.Tensor, prm: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
            audio_seconds: float = 0.0) -> None:
        """One batch: ``metrics`` a HeadMetrics of ``[U, L, H]`` tensors, ``lengths`` ``[U]`` frames,
        ``prm`` = (sum_u P'_u ``[L,H,Y,Y]``, sum_u P_U,u ``[Y,Y]``[, number of utterances in those sums])
        over the batch's utterances (without the count: every non-empty utterance of the batch)."""
        dev = self.sums.device
        for i, k in enumerate(METRICS):
            x = getattr(metrics, k, None)
            if x is None:
                continue
            self.computed[i] = 1.0
            x = x.to(device=dev, dtype=torch.float64)
            ok = ~torch.isnan(x)
            self.sums[i] += torch.where(ok, x, torch.zeros((), dtype=x.dtype, device=dev)).sum(0)
            self.counts[i] += ok.sum(0).to(torch.float64)
        lengths = lengths.to(dev)
        nonempty = int((lengths > 0).sum())
        self.scalars[0] += int(lengths.numel())
        self.scalars[1] += int(lengths.sum())
        self.scalars[2] += float(audio_seconds)
        if prm is not None and prm[0] is not None:
            self.prm_counts += prm[0].to(device=dev, dtype=torch.float64)
            self.prm_base += prm[1].to(device=dev, dtype=torch.float64)
            self.scalars[3] += int(prm[2]) if len(prm) > 2 else nonempty

    # -------------------------------------------------------------- merge / persist
    def _tensors(self):
        return [self.sums, self.counts, self.computed, self.prm_counts, self.prm_base, self.scalars]

    def all_reduce(self, device: torch.device) -> None:
        """Sum over every process of the default ``torch.distributed`` group (in place)."""
        import torch.distributed as dist

        for t in self._tensors():
            buf = t.to(device)
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            t.copy_(buf.to(t.device))
        self.computed.clamp_(max=1.0)

    def merge(self, other: "Accumulator") -> None:
        for a, b in zip(self._tensors(), other._tensors()):
            a += b.to(a.device)
        self.computed.clamp_(max=1.0)

    def state(self) -> dict:
        return {"shape": (self.L, self.H, self.Y), "sums": self.sums.cpu(), "counts": self.counts.cpu(),
                "computed": self.computed.cpu(), "prm_counts": self.prm_counts.cpu(),
                "prm_base": self.prm_base.cpu(), "scalars": self.scalars.cpu()}

    @classmethod
    def from_state(cls, st: dict, device="cpu") -> "Accumulator":
        a = cls(*st["shape"], device=device)
        for k in ("sums", "counts", "computed", "prm_counts", "prm_base", "scalars"):
            getattr(a, k).copy_(st[k])
        return a

    # -------------------------------------------------------------- results
    def heads_table(self) -> dict:
        """Corpus means ``[L, H]`` numpy float64 per metric (``None`` if not computed; NaN if no
        utterance defines it) and ``n_utterances`` ``[L, H]``."""
        out = {}
        for i, k in enumerate(METRICS):
            if not bool(self.computed[i]):
                out[k] = None
                continue
            c = self.counts[i]
            out[k] = torch.where(c > 0, self.sums[i] / c.clamp(min=1), torch.full_like(c, float("nan"))).cpu().numpy()
        done = [i for i in range(len(METRICS)) if bool(self.computed[i])]
        n = self.counts[done].amax(0) if done else torch.full((self.L, self.H), self.n_utterances, dtype=torch.float64)
        out["n_utterances"] = n.cpu().numpy().astype(np.int64)
        return out

    def prm(self) -> dict:
        """Corpus P' (``P_counts``), P_U (``P_base``), P = (P' - P_U) / P_U (NaN where P_U = 0),
        concentration C[n] = mean over m of P[m, n] (NaN left out), as numpy float64."""
        n = self.prm_n
        Pp = (self.prm_counts / n if n else torch.full_like(self.prm_counts, float("nan"))).cpu().numpy()
        Pu = (self.prm_base / n if n else torch.full_like(self.prm_base, float("nan"))).cpu().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            P = np.where(Pu > 0, (Pp - Pu) / np.where(Pu > 0, Pu, 1.0), np.nan)
        ok = ~np.isnan(P)
        cnt = ok.sum(-2)
        C = np.where(cnt > 0, np.where(ok, P, 0.0).sum(-2) / np.maximum(cnt, 1), np.nan)
        return {"P_counts": Pp, "P_base": Pu, "P": P, "concentration": C}

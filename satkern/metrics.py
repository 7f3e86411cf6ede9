"""Per-utterance head metrics (METRICS.md eqs. 1-3 and the weight baseline) and head categories.

Everything here works on the per-row statistics the kernels emit; nothing here
knows which backend produced them. :func:`head_metrics_from_map` computes the same
metrics straight from a materialized map, as an independent check for tests.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

METRIC_STATS = {"G": "entropy", "V": "colmass", "D": "distance", "W": "maxweight"}
CATEGORIES = ("global", "vertical", "diagonal")


@dataclass
class HeadMetrics:
    """Per-utterance head metrics, each ``[B, H]`` (or ``[U, L, H]`` from a patched model).

    * ``G`` globalness: mean row entropy, (1/T) sum_q H(A[q]);
    * ``V`` verticality: -H(colmass / T);
    * ``D`` diagonality: -(1/T^2) sum_q sum_k abs(q-k) A[q,k];
    * ``W`` weight baseline: max_q max_k A[q,k].

    NaN for empty utterances and masked heads; ``None`` for a metric not computed.
    """

    G: Optional[torch.Tensor] = None
    V: Optional[torch.Tensor] = None
    D: Optional[torch.Tensor] = None
    W: Optional[torch.Tensor] = None


def _lengths_of(res, lengths, B: int, T: int, device) -> torch.Tensor:
    if lengths is None:
        lengths = getattr(res, "lengths", None)
    if lengths is None:
        return torch.full((B,), T, dtype=torch.int64, device=device)
    lengths = torch.as_tensor(lengths)
    if lengths.shape != (B,):
        raise ValueError(f"satkern.head_metrics: argument 'lengths' must have shape [B] = [{B}]; "
                         f"got {tuple(lengths.shape)}")
    message = f"satkern.head_metrics: argument 'lengths' must hold values in [0, T={T}]"
    if lengths.device.type == "cpu":
        if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
            raise ValueError(message)
    elif B and lengths.device.type != "meta":  # no host read of device values (it would wait for the GPU)
        torch._assert_async(((lengths >= 0) & (lengths <= T)).all(), message)
    return lengths.to(device=device, dtype=torch.int64)


def head_metrics(res, lengths=None, which: Sequence[str] = ("G", "V", "D", "W"), *,
                 warn_empty: bool = True) -> HeadMetrics:
    """Per-utterance G, V, D, W ``[B, H]`` from an :class:`~satkern.AttentionResult`.

    ``lengths`` defaults to the lengths the attention call used. ``which`` restricts
    the metrics computed (each needs one statistic: G entropy, V colmass, D distance,
    W maxweight); a needed statistic that was not computed raises ``ValueError``.
    ``warn_empty=False`` skips the warning about utterances of length 0 (which reads the
    lengths on the host: on a GPU, a wait for the device; ``satkern.patch`` warns itself).
    """
    which = tuple(which)
    bad = [w for w in which if w not in METRIC_STATS]
    if bad:
        raise ValueError(f"satkern.head_metrics: argument 'which' must name metrics from "
                         f"{tuple(METRIC_STATS)}; got {bad}")
    missing = [f"{w} needs '{METRIC_STATS[w]}'" for w in which if getattr(res, METRIC_STATS[w], None) is None]
    if missing:
        raise ValueError("satkern.head_metrics: statistics not computed: " + ", ".join(missing)
                         + ". Pass them in satkern.attention(..., stats=...) or restrict `which`.")
    B, H, T = res.lse.shape
    L = _lengths_of(res, lengths, B, T, res.lse.device)
    sd = res.lse.dtype
    idx = torch.arange(T, device=res.lse.device)
    valid = (idx[None, :] < L[:, None])[:, None, :]  # [B,1,T]
    Tf = L.to(sd)[:, None]  # [B,1]
    empty = (L == 0)[:, None]
    if warn_empty and bool(empty.any()):
        warnings.warn("satkern.head_metrics: utterances of length 0 have no metrics (NaN)", stacklevel=2)
    nan = torch.tensor(float("nan"), dtype=sd, device=res.lse.device)
    zero = torch.zeros((), dtype=sd, device=res.lse.device)
    out = HeadMetrics()
    safe_T = torch.where(empty, torch.ones_like(Tf), Tf)
    if "G" in which:
        G = torch.where(valid, res.entropy.to(sd), zero).sum(-1) / safe_T
        out.G = torch.where(empty, nan, G)
    if "V" in which:
        c = torch.where(valid, res.colmass.to(sd), zero) / safe_T[..., None]
        V = torch.special.xlogy(c, c).sum(-1)
        out.V = torch.where(empty, nan, V)
    if "D" in which:
        D = -torch.where(valid, res.distance.to(sd), zero).sum(-1) / (safe_T * safe_T)
        out.D = torch.where(empty, nan, D)
    if "W" in which:
        mw = torch.where(valid, res.maxweight.to(sd), torch.tensor(float("-inf"), dtype=sd, device=res.lse.device))
        W = mw.amax(-1) if T > 0 else torch.full((B, H), float("nan"), dtype=sd, device=res.lse.device)
        out.W = torch.where(empty, nan, W)
    return out


def head_metrics_from_map(A: torch.Tensor, lengths=None) -> HeadMetrics:
    """G, V, D, W ``[B, H]`` straight from maps ``A`` ``[B, H, T, T]`` (float64 math).

    An independent path for tests: rows/keys past ``lengths`` are ignored.
    """
    A = A.to(torch.float64)
    B, H, T, _ = A.shape
    L = torch.full((B,), T, dtype=torch.int64) if lengths is None else torch.as_tensor(lengths).to(torch.int64)
    res = {k: torch.full((B, H), float("nan"), dtype=torch.float64) for k in "GVDW"}
    for b in range(B):
        n = int(L[b])
        if n == 0:
            continue
        a = A[b, :, :n, :n]
        res["G"][b] = -torch.special.xlogy(a, a).sum(-1).mean(-1)
        col = a.sum(-2) / n
        res["V"][b] = torch.special.xlogy(col, col).sum(-1)
        i = torch.arange(n, dtype=torch.float64)
        res["D"][b] = -(a * (i[:, None] - i[None, :]).abs()).sum((-1, -2)) / (n * n)
        res["W"][b] = a.amax((-1, -2))
    return HeadMetrics(**res)


def categorize(G: torch.Tensor, V: torch.Tensor, D: torch.Tensor) -> list:
    """Category of every head (METRICS.md sec. 4) from corpus-level metrics of any shape.

    All heads of the model are ranked by G, by V and by D (rank 1 = largest value);
    a head's category is the metric under which its rank is best; ties go to global,
    then vertical, then diagonal. Heads with a NaN metric rank last under it.
    Returns a flat list of category names in the order of ``G.flatten()``.
    """
    ranks = []
    for m in (G, V, D):
        x = torch.as_tensor(m, dtype=torch.float64).flatten()
        x = torch.where(torch.isnan(x), torch.tensor(float("-inf"), dtype=torch.float64), x)
        order = torch.argsort(-x, stable=True)
        r = torch.empty_like(order)
        r[order] = torch.arange(1, len(order) + 1)
        # equal values share the best rank among them
        for val in torch.unique(x):
            sel = x == val
            r[sel] = r[sel].min()
        ranks.append(r)
    R = torch.stack(ranks, dim=-1)  # [N, 3]
    best = R.argmin(dim=-1)  # first minimum: global < vertical < diagonal on ties
    return [CATEGORIES[int(i)] for i in best]


# ---------------------------------------------------------------- uniform attention and length-free values
# Uniform attention (every row 1/T) is what a head gives when its scores carry no information; every metric
# above has a closed form for it that depends on the length T alone (METRICS.md "Uniform attention"):
#   G_unif(T) = log T             (every row has the largest entropy)
#   V_unif(T) = -log T            (the column mass is uniform too)
#   D_unif(T) = -(T^2 - 1)/(3 T^2)   (sum over q, k of abs(q - k) is (T^3 - T)/3)
#   W_unif(T) = 1/T
# The length-free values put a head between uniform attention and the most peaked map, in the direction
# of "larger = more so" that G, V, D keep:
#   G_free = G / log T                     1 = uniform rows, 0 = every row on one key
#   V_free = 1 + V / log T                 0 = uniform column mass, 1 = one key takes all the attention
#   D_free = 1 + D / |D_unif(T)|           0 = as uniform, 1 = on the diagonal (below 0: farther than uniform)
#   W_free = (W - 1/T) / (1 - 1/T)         0 = uniform, 1 = some row puts all its weight on one key
# and the mean KL divergence of the rows from uniform is exactly log T - G (nats).
LENGTH_FREE_UNIFORM = {"G": 1.0, "V": 0.0, "D": 0.0, "W": 0.0}  # each length-free value of uniform attention


def uniform_head_metrics(T) -> dict:
    """G, V, D, W of uniform attention (every weight 1/T) at lengths ``T`` (array-like of frame counts).

    Returns ``{"G", "V", "D", "W"}`` float64 numpy arrays of ``T``'s shape; NaN where ``T < 1``
    (no metrics, as an empty utterance). ``T = 1`` gives G = V = D = 0, W = 1.
    """
    import numpy as np

    T = np.asarray(T, dtype=np.float64)
    ok = T >= 1
    Ts = np.where(ok, T, 1.0)
    nan = np.float64("nan")
    return {"G": np.where(ok, np.log(Ts), nan), "V": np.where(ok, -np.log(Ts), nan),
            "D": np.where(ok, -(Ts * Ts - 1.0) / (3.0 * Ts * Ts), nan), "W": np.where(ok, 1.0 / Ts, nan)}


def length_free(metric: str, value, T):
    """The length-free value of ``metric`` (``"G"``, ``"V"``, ``"D"`` or ``"W"``) at lengths ``T``:
    the metric placed between uniform attention and the most peaked map (formulas above;
    :data:`LENGTH_FREE_UNIFORM` gives uniform attention's value). NaN where ``T < 2`` (uniform and
    peaked coincide) or ``value`` is NaN. Works elementwise on numpy arrays."""
    import numpy as np

    if metric not in LENGTH_FREE_UNIFORM:
        raise ValueError(f"satkern.metrics.length_free: argument 'metric' must be one of G, V, D, W; got {metric!r}")
    x = np.asarray(value, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    ok = T >= 2
    Ts = np.where(ok, T, 2.0)
    u = uniform_head_metrics(Ts)
    if metric == "G":
        out = x / u["G"]
    elif metric == "V":
        out = 1.0 + x / u["G"]
    elif metric == "D":
        out = 1.0 + x / -u["D"]
    else:
        out = (x - u["W"]) / (1.0 - u["W"])
    return np.where(ok, out, np.float64("nan"))


def kl_from_uniform(G, T):
    """Mean KL divergence (nats) of a head's rows from the uniform row at lengths ``T``: ``log T - G``
    exactly (KL(p || 1/T) = log T - H(p), averaged over the rows). 0 only for uniform attention."""
    import numpy as np

    u = uniform_head_metrics(T)
    return u["G"] - np.asarray(G, dtype=np.float64)

"""Phoneme boundaries from frame features: the kernel-gram detector of the paper's sec. 5 and
supplementary sec. 2, and the strict hit counting and R-value it is scored with.

Every step is METRICS.md "Phoneme segmentation", one function per step, vectorized in torch
(no Python loop over frames or over k; any device; float64 in, float64-exact out)::

    v [T, F] --kernel_gram--> K [T, T] --filtered_kernel_gram--> Kf [T, T] --score_curve--> S [T]
      --minimal_plateaus--> boundaries (seconds)

For one utterance, K, Kf, S are O(T^2) memory; nothing larger is ever built (the grid
search helpers add one leading axis over beta values).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, List, Sequence, Tuple

import numpy as np
import torch

# Pairs whose squared distance from the Gram identity |x|^2 + |y|^2 - 2 x.y lies within this many
# rounding units (times the feature dimension) of zero are recomputed by direct differences, so
# identical rows (the duplicated rows of an up-sampled map or of repeated hidden states) have a
# distance of exactly 0 and K = 1 exactly, as a plain loop computes it.
_GRAM_REFINE_ULPS = 4.0
# Hits are "at most tol apart"; this slack (1 ns, far below one sample at 16 kHz = 62.5 us) keeps a
# pair exactly tol apart (e.g. 0.145 - 0.125 = 0.020000000000000018 in binary) a hit.
_TIME_SLACK_S = 1e-9
# METRICS.md: true boundary times closer than 1 ms count once.
TRUE_BOUNDARY_MERGE_S = 1e-3


def _check_positive(name: str, value) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"argument '{name}' must be a positive number; got {value!r}") from None
    if not (x > 0) or math.isinf(x):
        raise ValueError(f"argument '{name}' must be a positive finite number; got {value!r}")
    return x


def _check_rows(v: torch.Tensor, name: str = "v") -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        raise ValueError(f"argument '{name}' must be a torch.Tensor [T, F]; got {type(v).__name__}")
    if v.dim() != 2:
        raise ValueError(f"argument '{name}' must be a 2-d tensor [T, F] (one row per frame); got shape "
                         f"{tuple(v.shape)}")
    if not v.dtype.is_floating_point:
        v = v.to(torch.float64)
    return v


# ---------------------------------------------------------------------------------------------
# up-sampling
# ---------------------------------------------------------------------------------------------
def upsample_map(A: torch.Tensor, factor: int) -> torch.Tensor:
    """Up-sample an attention map of a model with downsample rate ``R = factor`` (supplementary
    sec. 1): every weight becomes an ``R x R`` block (``np.kron(A, ones((R, R)))``), then every row
    is divided by its sum (rows summing to 0 stay 0). ``A [..., T_e, T_e]`` -> ``[..., R T_e, R T_e]``::

        A = [[a, b],      R = 2:   [[a, a, b, b],      each row / (2 (a + b))
             [c, d]]                [a, a, b, b],
                                    [c, c, d, d],
                                    [c, c, d, d]]
    """
    if not isinstance(A, torch.Tensor) or A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"argument 'A' must be a square map [..., T, T]; got "
                         f"{tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__}")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"argument 'factor' must be a positive int (the downsample rate); got {factor!r}")
    if factor == 1:
        U = A.clone()
    else:
        U = A.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)
    s = U.sum(dim=-1, keepdim=True)
    return torch.where(s != 0, U / torch.where(s != 0, s, torch.ones_like(s)), torch.zeros_like(U))


# ---------------------------------------------------------------------------------------------
# steps 1-4
# ---------------------------------------------------------------------------------------------
# below this many rows the Gram matrix is one GEMM; above, its symmetry saves a third of the work
_GRAM_SPLIT_MIN_ROWS = 256


def _gram(v: torch.Tensor) -> torch.Tensor:
    """``v v^T`` ``[T, T]`` from its upper block rows only (the Gram matrix is symmetric): the first
    half of the rows against all rows, the lower-left block mirrored, the lower-right block by
    recursion -- about 2/3 of the multiply-adds of one full GEMM."""
    T = v.shape[0]
    if T < _GRAM_SPLIT_MIN_ROWS:
        return v @ v.t()
    h = T // 2
    G = v.new_empty((T, T))
    torch.mm(v[:h], v.t(), out=G[:h])  # the first h rows of G are contiguous
    G[h:, :h] = G[:h, h:].t()
    G[h:, h:] = _gram(v[h:])
    return G


def pairwise_distances(v: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``d[i, j] = ||v_i - v_j||_2`` ``[T, T]`` in ``v``'s dtype.

    One GEMM (``|x|^2 + |y|^2 - 2 x.y``); pairs within rounding of 0 (identical or nearly
    identical rows, the diagonal) are recomputed by direct differences, so equal rows are
    exactly 0 apart (``K = 1`` exactly) as a plain loop computes them.
    """
    v = _check_rows(v)
    T, F = v.shape
    if T == 0:
        return v.new_zeros((0, 0))
    sq = (v * v).sum(dim=-1)
    both = sq[:, None] + sq[None, :]
    G = _gram(v)
    d2 = torch.add(both, G, alpha=-2.0, out=G)  # |x|^2 + |y|^2 - 2 x.y, in place
    near = d2 <= both.mul_(_GRAM_REFINE_ULPS * max(F, 1) * torch.finfo(v.dtype).eps)
    i, j = near.nonzero(as_tuple=True)
    if i.numel():
        # chunked so that the differences of many near pairs (all-equal rows) stay small in memory
        step = max(1, (1 << 22) // max(F, 1))
        d2[i, j] = torch.cat([((v[i[s:s + step]] - v[j[s:s + step]]) ** 2).sum(-1)
                              for s in range(0, i.numel(), step)])
    return d2.clamp_min_(0.0).sqrt_()


def kernel_gram(v: torch.Tensor, alpha: float) -> torch.Tensor:
    """Step 1: ``K[i, j] = exp(-||v_i - v_j||_2 / alpha)`` for frame features ``v [T, F]``; ``K [T, T]``."""
    alpha = _check_positive("alpha", alpha)
    return torch.exp(-pairwise_distances(v) / alpha)


def _run_bounds(K: torch.Tensor, eps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each row ``i`` the open run ``(l_i, r_i)`` around the diagonal where ``K[i, k] > eps_i``.

    ``K [T, T]``, ``eps [..., T]`` -> ``l, r`` int64 ``[..., T]``: ``r_i`` is the first ``k >= i``
    with ``K[i, k] <= eps_i`` (``T`` if none), ``l_i`` the last ``k <= i`` with it (``-1`` if none).
    Then ``Kf[i, j] = 1`` iff ``l_i < j < r_i`` (empty when ``K[i, i] <= eps_i``: ``l_i = r_i = i``).
    """
    T = K.shape[-1]
    lead = eps.shape[:-1]
    if eps.reshape(-1, T).shape[0] <= _DIRECT_MAX_THRESHOLDS:
        return _run_bounds_direct(K, eps)
    idx = torch.arange(T, device=K.device)
    inf = torch.tensor(float("inf"), dtype=K.dtype, device=K.device)
    # Every K[i, i..k] exceeds eps_i iff their minimum does: the running minimum outward from the
    # diagonal (a cumulative min, independent of eps) is computed once, and each run length is a
    # binary search in it -- any number of thresholds at O(T log T) each.
    # right: min K[i, i..k] for k >= i (+inf before the diagonal); negated it is non-decreasing
    right = torch.where(idx[None, :] >= idx[:, None], K, inf).cummin(dim=-1).values.neg_()
    # left: the same on the column-flipped rows, column c <-> k = T-1-c, min K[i, k..i] for k <= i
    left = torch.where(idx[None, :] >= (T - 1 - idx)[:, None], K.flip(-1), inf).cummin(dim=-1).values.neg_()
    thr = (-eps).reshape(-1, T).t().contiguous()  # [T, n]: one row of thresholds per frame
    # entries < -eps_i: the +inf padding (-inf after negation) plus the run's frames
    r = torch.searchsorted(right, thr, side="left")  # = i + run length to the right
    nl = torch.searchsorted(left, thr, side="left")  # = (T-1-i) + run length to the left
    l = (T - 1) - nl
    return l.t().reshape(*lead, T), r.t().reshape(*lead, T)


# up to this many thresholds per row, the runs are found directly (two masked reductions per
# threshold); beyond, one cumulative minimum shared by all thresholds plus binary searches is faster
_DIRECT_MAX_THRESHOLDS = 3


def _run_bounds_direct(K: torch.Tensor, eps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    T = K.shape[-1]
    itype = torch.int32 if T < 2 ** 31 - 1 else torch.int64  # 4-byte indices halve the [.., T, T] temporaries
    idx = torch.arange(T, device=K.device, dtype=itype)
    fails = ~(K > eps[..., :, None])  # [..., T, T]; NaN counts as a failure
    big = torch.full((), T, dtype=itype, device=K.device)
    neg = torch.full((), -1, dtype=itype, device=K.device)
    r = torch.where(fails & (idx[None, :] >= idx[:, None]), idx, big).amin(dim=-1)
    l = torch.where(fails & (idx[None, :] <= idx[:, None]), idx, neg).amax(dim=-1)
    return l.to(torch.int64), r.to(torch.int64)


def _row_thresholds(K: torch.Tensor, beta) -> torch.Tensor:
    """Step 2: ``eps_i = beta * (1/T) sum_j K[i, j]``; ``beta`` a float or a 1-d tensor (leading axis)."""
    mean = K.mean(dim=-1)
    b = torch.as_tensor(beta, dtype=K.dtype, device=K.device)
    return b[..., None] * mean if b.dim() else b * mean


def filtered_kernel_gram(K: torch.Tensor, beta: float) -> torch.Tensor:
    """Steps 2-3: ``Kf [T, T]`` uint8, ``Kf[i, j] = 1`` iff ``K[i, k] > eps_i`` for every ``k``
    between ``i`` and ``j`` (both included), ``eps_i = beta * mean_j K[i, j]``.

    That is the cumulative product of ``K[i, :] > eps_i`` along row ``i`` outward from the diagonal;
    it is computed as the run ``(l_i, r_i)`` between the nearest failures on either side::

        row i:   K > eps_i   1 0 1 1 [1] 1 0 1     (diagonal in brackets)
                 Kf[i]       0 0 1 1 [1] 1 0 0
    """
    if not isinstance(K, torch.Tensor) or K.dim() != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"argument 'K' must be a square matrix [T, T]; got "
                         f"{tuple(K.shape) if isinstance(K, torch.Tensor) else type(K).__name__}")
    beta = _check_positive("beta", beta)
    T = K.shape[0]
    l, r = _run_bounds(K, _row_thresholds(K, beta))
    j = torch.arange(T, device=K.device)
    return ((j[None, :] > l[:, None]) & (j[None, :] < r[:, None])).to(torch.uint8)


def score_curve(Kf: torch.Tensor) -> torch.Tensor:
    """Step 4: ``S[t] = sum_k Kf[t-k, t+k]`` over every integer ``k`` with both indices in
    ``[0, T)`` -- the sum of the anti-diagonal ``i + j = 2t`` of ``Kf``. ``S`` int64 ``[T]``."""
    if not isinstance(Kf, torch.Tensor) or Kf.dim() != 2 or Kf.shape[0] != Kf.shape[1]:
        raise ValueError(f"argument 'Kf' must be a square 0/1 matrix [T, T]; got "
                         f"{tuple(Kf.shape) if isinstance(Kf, torch.Tensor) else type(Kf).__name__}")
    T = Kf.shape[0]
    if T == 0:
        return torch.zeros(0, dtype=torch.int64, device=Kf.device)
    idx = torch.arange(T, device=Kf.device)
    antidiag = (idx[:, None] + idx[None, :]).reshape(-1)  # i + j in [0, 2T - 2]
    sums = torch.zeros(2 * T - 1, dtype=torch.int64, device=Kf.device)
    sums.index_add_(0, antidiag, Kf.reshape(-1).to(torch.int64))
    return sums[0::2]


def _score_from_bounds(l: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``S`` ``[..., T]`` from the row runs of :func:`_run_bounds`, in O(T) per curve: row ``i``
    puts a 1 on the anti-diagonals ``s = i + j`` for ``l_i < j < r_i``, i.e. ``s`` in
    ``[i + l_i + 1, i + r_i - 1]``; a difference array plus a cumulative sum counts them all."""
    T = l.shape[-1]
    i = torch.arange(T, device=l.device)
    nonempty = r > l + 1
    lead = l.shape[:-1]
    diff = torch.zeros(*lead, 2 * T + 1, dtype=torch.int64, device=l.device)
    one = nonempty.to(torch.int64)
    diff.scatter_add_(-1, torch.where(nonempty, i + l + 1, torch.zeros_like(l)), one)
    diff.scatter_add_(-1, torch.where(nonempty, i + r, torch.zeros_like(r)), -one)
    return diff.cumsum(dim=-1)[..., 0:2 * T - 1:2]


def minimal_plateaus(S: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Step 5: the interior minimal plateaus of a curve ``S [T]``: maximal runs ``S[a..b]`` of equal
    values with ``0 < a``, ``b < T - 1``, ``S[a-1] > S[a]`` and ``S[b+1] > S[b]``. Returns ``(a, b)``
    int64 tensors (one entry per plateau, in time order)::

        S = 5 3 3 4 2 6 6     plateaus: (1, 2) and (4, 4)
    """
    if S.dim() != 1:
        raise ValueError(f"argument 'S' must be 1-d [T]; got shape {tuple(S.shape)}")
    T = S.shape[0]
    if T < 3:
        z = torch.zeros(0, dtype=torch.int64, device=S.device)
        return z, z.clone()
    change = (S[1:] != S[:-1]).nonzero(as_tuple=True)[0] + 1
    starts = torch.cat([torch.zeros(1, dtype=torch.int64, device=S.device), change])
    ends = torch.cat([change - 1, torch.full((1,), T - 1, dtype=torch.int64, device=S.device)])
    interior = (starts > 0) & (ends < T - 1)
    before = S[(starts - 1).clamp_min(0)]
    after = S[(ends + 1).clamp_max(T - 1)]
    keep = interior & (before > S[starts]) & (after > S[ends])
    return starts[keep], ends[keep]


def plateau_times(a: torch.Tensor, b: torch.Tensor, hop: float) -> torch.Tensor:
    """Boundary time of each plateau, its midpoint ``(a + b + 1) / 2 * hop`` seconds (float64)."""
    return (a + b + 1).to(torch.float64) * (0.5 * float(hop))


def boundaries(v: torch.Tensor, alpha: float, beta: float, hop: float) -> torch.Tensor:
    """Phoneme boundaries (seconds, float64 ``[N]``) of one utterance's frame features ``v [T, F]``,
    frame ``t`` spanning ``[t hop, (t + 1) hop)``: steps 1-5 of METRICS.md."""
    alpha = _check_positive("alpha", alpha)
    beta = _check_positive("beta", beta)
    hop = _check_positive("hop", hop)
    v = _check_rows(v)
    if v.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64, device=v.device)
    K = torch.exp(-pairwise_distances(v) / alpha)
    l, r = _run_bounds(K, _row_thresholds(K, beta))
    a, b = minimal_plateaus(_score_from_bounds(l, r))
    return plateau_times(a, b, hop)


def score_curves(distances: torch.Tensor, alpha: float, betas: Sequence[float]) -> torch.Tensor:
    """``S`` for several ``beta`` at once from precomputed :func:`pairwise_distances`:
    ``[len(betas), T]`` int64 (the grid search's inner step)."""
    alpha = _check_positive("alpha", alpha)
    betas = [_check_positive("beta", b) for b in betas]
    if not betas:
        raise ValueError("argument 'betas' must hold at least one value")
    K = torch.exp(-distances / alpha)
    if K.shape[-1] == 0:
        return torch.zeros(len(betas), 0, dtype=torch.int64, device=K.device)
    b = torch.tensor(betas, dtype=K.dtype, device=K.device)
    l, r = _run_bounds(K, _row_thresholds(K, b))
    return _score_from_bounds(l, r)


def curve_boundaries(S: torch.Tensor, hop: float) -> torch.Tensor:
    """Boundary times (seconds, float64) of one score curve ``S [T]``."""
    a, b = minimal_plateaus(S)
    return plateau_times(a, b, hop)


# ---------------------------------------------------------------------------------------------
# ground truth and scoring
# ---------------------------------------------------------------------------------------------
def true_boundaries(segments: Iterable) -> np.ndarray:
    """True boundary times (seconds, sorted float64) of one alignment ``[(start_s, end_s, label)]``:
    every segment start and end except the earliest start and the latest end; times closer than
    1 ms to the previous kept time count once (the earlier one is kept)."""
    starts, ends = [], []
    for seg in segments:
        if hasattr(seg, "start"):
            a, b = seg.start, seg.end
        else:
            a, b = seg[0], seg[1]
        starts.append(float(a))
        ends.append(float(b))
    if not starts:
        return np.zeros(0, dtype=np.float64)
    first, last = min(starts), max(ends)
    times = np.array(sorted([s for s in starts if s != first] + [e for e in ends if e != last]), dtype=np.float64)
    if times.size == 0:
        return times
    kept = [times[0]]
    for t in times[1:]:  # over boundaries (a few dozen), not frames
        if t - kept[-1] >= TRUE_BOUNDARY_MERGE_S:
            kept.append(t)
    return np.array(kept, dtype=np.float64)


def count_hits(true: Sequence[float], pred: Sequence[float], tolerance: float = 0.02) -> int:
    """Strict one-to-one hits: the size of a largest matching of true and predicted boundaries at
    most ``tolerance`` seconds apart (each used once). For points on a line, matching left to
    right -- pair the earliest unmatched true and predicted boundaries when they are close enough,
    otherwise drop whichever lies earlier -- is optimal."""
    tolerance = _check_positive("tolerance", tolerance)
    t = np.sort(np.asarray(true, dtype=np.float64).reshape(-1))
    p = np.sort(np.asarray(pred, dtype=np.float64).reshape(-1))
    i = j = hits = 0
    limit = tolerance + _TIME_SLACK_S
    while i < t.size and j < p.size:  # over boundaries, not frames
        if abs(t[i] - p[j]) <= limit:
            hits += 1
            i += 1
            j += 1
        elif p[j] < t[i]:
            j += 1
        else:
            i += 1
    return hits


def _ratio(num: float, den: float) -> float:
    """``num / den`` with 0/0 = 0 (METRICS.md)."""
    if den == 0:
        return 0.0 if num == 0 else math.copysign(math.inf, num)
    return num / den


@dataclass(frozen=True)
class SegmentationScores:
    """Corpus segmentation scores (counts summed over utterances, then the ratios)."""

    hits: int
    n_pred: int
    n_true: int
    precision: float
    recall: float
    f1: float
    os: float
    r_value: float

    @classmethod
    def from_counts(cls, hits: int, n_pred: int, n_true: int) -> "SegmentationScores":
        """precision = hits/N_pred, recall HR = hits/N_true, F1 = 2PR/(P+R), OS = N_pred/N_true - 1,
        r1 = sqrt((1-HR)^2 + OS^2), r2 = (-OS + HR - 1)/sqrt(2), R = 1 - (|r1| + |r2|)/2; 0/0 = 0."""
        hits, n_pred, n_true = int(hits), int(n_pred), int(n_true)
        p = _ratio(hits, n_pred)
        hr = _ratio(hits, n_true)
        f1 = _ratio(2.0 * p * hr, p + hr)
        os_ = _ratio(n_pred, n_true) - 1.0
        r1 = math.sqrt((1.0 - hr) ** 2 + os_ ** 2)
        r2 = (-os_ + hr - 1.0) / math.sqrt(2.0)
        return cls(hits, n_pred, n_true, p, hr, f1, os_, 1.0 - (abs(r1) + abs(r2)) / 2.0)

    def as_dict(self) -> dict:
        return asdict(self)


def r_value(hits: int, n_pred: int, n_true: int) -> float:
    """Räsänen's R-value from summed counts (see :meth:`SegmentationScores.from_counts`)."""
    return SegmentationScores.from_counts(hits, n_pred, n_true).r_value


def evaluate(true: Sequence, pred: Sequence, tolerance: float = 0.02) -> SegmentationScores:
    """Scores over a corpus: ``true`` and ``pred`` are lists of per-utterance boundary-time arrays
    (seconds); hits, N_pred and N_true are summed over utterances, then the ratios are taken."""
    tolerance = _check_positive("tolerance", tolerance)
    true, pred = list(true), list(pred)
    if len(true) != len(pred):
        raise ValueError(f"arguments 'true' and 'pred' must hold one array per utterance each; got "
                         f"{len(true)} and {len(pred)}")
    hits = n_pred = n_true = 0
    for t, p in zip(true, pred):
        t = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)
        p = p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else np.asarray(p, dtype=np.float64)
        hits += count_hits(t, p, tolerance)
        n_pred += int(p.size)
        n_true += int(t.size)
    return SegmentationScores.from_counts(hits, n_pred, n_true)


__all__ = ["upsample_map", "pairwise_distances", "kernel_gram", "filtered_kernel_gram", "score_curve",
           "minimal_plateaus", "plateau_times", "boundaries", "score_curves", "curve_boundaries",
           "true_boundaries", "count_hits", "evaluate", "r_value", "SegmentationScores",
           "TRUE_BOUNDARY_MERGE_S"]

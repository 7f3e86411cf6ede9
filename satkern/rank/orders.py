"""Head orders for cumulative head pruning (METRICS.md "Importance ranking", paper sec. 7.1).

Every order runs over all heads of all layers, as ``(layer, head)`` pairs, the first pruned first:

* ``G``, ``V``, ``D``: from the highest value to the lowest (the most global / vertical / diagonal
  head first);
* ``W``: from the lowest max-weight to the highest (Hao et al. rank heads with large weights as
  important, so the least important goes first);
* ``gradient``: Michel et al.'s importance I_h = abs(sum dL/dxi_h), from the lowest to the highest;
* ``random``: a permutation drawn from ``numpy.random.default_rng(seed)`` (a control).

Ties are broken by ``(layer, head)``; heads whose score is NaN (no utterance defined it) go last,
in ``(layer, head)`` order. The pruned set after ``k`` steps is the first ``k * step`` heads of the
order (the last step prunes every head), so pruned sets are nested.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

METRIC_ORDERS = ("G", "V", "D", "W")
ORDERS = ("G", "V", "D", "W", "random", "gradient")
# True: the highest score is pruned first
HIGH_FIRST = {"G": True, "V": True, "D": True, "W": False, "gradient": False}

Head = Tuple[int, int]


def check_orders(names: Sequence[str]) -> List[str]:
    """The order names, validated (unknown names raise ``ValueError`` listing the known ones)."""
    names = [str(n).strip() for n in names if str(n).strip()]
    bad = [n for n in names if n not in ORDERS]
    if bad:
        raise ValueError(f"unknown order(s) {bad}; choose from {', '.join(ORDERS)}")
    if not names:
        raise ValueError(f"no order given; choose from {', '.join(ORDERS)}")
    return list(dict.fromkeys(names))


def order_by_score(scores: np.ndarray, *, high_first: bool) -> List[Head]:
    """Heads of an ``[L, H]`` score array in pruning order (ties by (layer, head), NaN last)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"order_by_score: scores must be [layers, heads]; got shape {scores.shape}")
    L, H = scores.shape
    keyed = []
    for l in range(L):
        for h in range(H):
            s = float(scores[l, h])
            nan = math.isnan(s)
            keyed.append(((1 if nan else 0, 0.0 if nan else (-s if high_first else s), l, h), (l, h)))
    keyed.sort(key=lambda kv: kv[0])
    return [head for _, head in keyed]


def random_order(num_layers: int, num_heads: int, seed: int) -> List[Head]:
    """A random permutation of the heads (``numpy.random.default_rng(seed)``, over (layer, head) order)."""
    heads = [(l, h) for l in range(num_layers) for h in range(num_heads)]
    perm = np.random.default_rng(int(seed)).permutation(len(heads))
    return [heads[i] for i in perm]


def head_order(by: str, *, scores: Optional[Dict[str, np.ndarray]] = None, num_layers: Optional[int] = None,
               num_heads: Optional[int] = None, seed: Optional[int] = None) -> List[Head]:
    """The pruning order ``by`` (see the module docstring).

    ``scores``: ``{"G": [L, H], "V": ..., "D": ..., "W": ..., "gradient": ...}`` (numpy); the random
    order needs ``num_layers``, ``num_heads`` and ``seed`` instead.
    """
    check_orders([by])
    if by == "random":
        if num_layers is None or num_heads is None or seed is None:
            raise ValueError("head_order('random'): needs num_layers, num_heads and seed")
        return random_order(num_layers, num_heads, seed)
    if scores is None or scores.get(by) is None:
        raise ValueError(f"head_order({by!r}): no {by} scores given")
    return order_by_score(scores[by], high_first=HIGH_FIRST[by])


def pruning_steps(order: Sequence[Head], step: int) -> List[List[Head]]:
    """The pruned sets along ``order``: ``[], order[:step], order[:2 step], ..., order`` (nested)."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be a positive int (heads pruned per step); got {step!r}")
    n = len(order)
    counts = list(range(0, n, int(step))) + [n]
    return [list(order[:k]) for k in counts]


def format_heads(heads: Sequence[Head]) -> str:
    """``"L:H;L:H;..."`` in pruning order (empty string for none)."""
    return ";".join(f"{l}:{h}" for l, h in heads)


def parse_heads(text) -> List[Head]:
    """Inverse of :func:`format_heads`."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or str(text).strip() == "":
        return []
    out = []
    for part in str(text).split(";"):
        l, h = part.split(":")
        out.append((int(l), int(h)))
    return out


def read_heads_csv(path, *, num_layers: int, num_heads: int) -> Dict[str, np.ndarray]:
    """``{"G", "V", "D", "W": [L, H] float64}`` from a ``satkern analyze`` heads.csv, checked against the
    model: exactly one row per head of a model with ``num_layers`` x ``num_heads`` heads, else
    ``ValueError`` (an order over another model's heads is refused)."""
    import pandas as pd

    df = pd.read_csv(path)
    need = ["layer", "head"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"heads file {path}: missing column(s) {missing} (expected satkern analyze's heads.csv)")
    L = int(df["layer"].max()) + 1 if len(df) else 0
    H = int(df["head"].max()) + 1 if len(df) else 0
    pairs = set(zip(df["layer"].astype(int), df["head"].astype(int)))
    if (L, H) != (num_layers, num_heads) or len(df) != num_layers * num_heads or len(pairs) != len(df) \
            or int(df["layer"].min()) < 0 or int(df["head"].min()) < 0:
        raise ValueError(f"heads file {path}: {len(df)} rows over {L} layers x {H} heads, but the model has "
                         f"{num_layers} layers x {num_heads} heads; it describes another model")
    out = {}
    for m in METRIC_ORDERS:
        arr = np.full((num_layers, num_heads), np.nan)
        if m in df.columns:
            arr[df["layer"].astype(int).to_numpy(), df["head"].astype(int).to_numpy()] = df[m].astype(float).to_numpy()
        out[m] = arr
    return out


__all__ = ["ORDERS", "METRIC_ORDERS", "HIGH_FIRST", "check_orders", "order_by_score", "random_order", "head_order",
           "pruning_steps", "format_heads", "parse_heads", "read_heads_csv"]

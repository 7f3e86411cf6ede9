"""Head orders (METRICS.md "Importance ranking"): directions, ties by (layer, head), nesting, heads.csv checks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from satkern.rank.orders import (format_heads, head_order, order_by_score, parse_heads, pruning_steps,
                                 random_order, read_heads_csv)


def test_directions_and_ties():
    G = np.array([[0.5, 0.9, 0.5], [0.9, 0.1, np.nan]])
    # highest first; the two 0.9 and the two 0.5 tie -> (layer, head) order; NaN last
    assert order_by_score(G, high_first=True) == [(0, 1), (1, 0), (0, 0), (0, 2), (1, 1), (1, 2)]
    # W: lowest first, same tie rule
    assert order_by_score(G, high_first=False) == [(1, 1), (0, 0), (0, 2), (0, 1), (1, 0), (1, 2)]


def test_random_orders_are_seeded_permutations():
    a, b, c = random_order(3, 4, 0), random_order(3, 4, 0), random_order(3, 4, 1)
    assert a == b and a != c
    assert sorted(a) == [(l, h) for l in range(3) for h in range(4)]


def test_pruned_sets_are_nested_top_k():
    rng = np.random.default_rng(7)
    scores = {m: rng.normal(size=(3, 4)).round(1) for m in "GVDW"}  # rounding makes ties
    for by in "GVDW":
        order = head_order(by, scores=scores)
        flat = [(scores[by][l, h], l, h) for l in range(3) for h in range(4)]
        sign = -1 if by in "GVD" else 1
        expect = [(l, h) for _, l, h in sorted(flat, key=lambda t: (sign * t[0], t[1], t[2]))]
        assert order == expect
        sets = pruning_steps(order, 5)
        assert [len(s) for s in sets] == [0, 5, 10, 12]
        for k, s in enumerate(sets):
            assert s == expect[:len(s)]
            if k:
                assert set(sets[k - 1]) <= set(s)


@pytest.mark.parametrize("step", [0, -1, 1.5, True])
def test_bad_step(step):
    with pytest.raises(ValueError, match="step"):
        pruning_steps([(0, 0)], step)


def test_unknown_order():
    with pytest.raises(ValueError, match="unknown order"):
        head_order("Q", scores={})


def test_format_parse_roundtrip():
    heads = [(3, 1), (0, 7), (10, 0)]
    assert format_heads(heads) == "3:1;0:7;10:0"
    assert parse_heads(format_heads(heads)) == heads
    assert parse_heads("") == [] and parse_heads(float("nan")) == []


def _heads_csv(path, L, H):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L),
                       **{m: rng.normal(size=L * H) for m in "GVDW"}})
    df.to_csv(path, index=False)
    return df


def test_heads_csv_read_and_mismatch_refused(tmp_path):
    df = _heads_csv(tmp_path / "heads.csv", 2, 4)
    got = read_heads_csv(tmp_path / "heads.csv", num_layers=2, num_heads=4)
    assert np.array_equal(got["G"].reshape(-1), df["G"].to_numpy())
    with pytest.raises(ValueError, match="another model"):
        read_heads_csv(tmp_path / "heads.csv", num_layers=3, num_heads=4)
    with pytest.raises(ValueError, match="another model"):
        read_heads_csv(tmp_path / "heads.csv", num_layers=2, num_heads=8)
    df.iloc[:-1].to_csv(tmp_path / "short.csv", index=False)  # one head missing
    with pytest.raises(ValueError, match="another model"):
        read_heads_csv(tmp_path / "short.csv", num_layers=2, num_heads=4)

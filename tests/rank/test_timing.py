"""Interleaved timing of the rank points (satkern/rank/timing.py): the order, the statistics, the rule."""
import math

import pytest

from satkern.rank.timing import (WIDE_SPREAD, check_rounds, interleaved_timing, readable_speedup, rotation,
                                 summarize)


@pytest.mark.parametrize("n,k", [(1, 1), (3, 5), (7, 3), (12, 5)])
def test_every_round_times_every_point_once_in_rotating_order(n, k):
    starts = []
    for r in range(k):
        order = rotation(n, k, r)
        assert sorted(order) == list(range(n))
        assert all(order[(i + 1) % n] == (order[i] + 1) % n for i in range(n))  # a rotation of 0..n-1
        starts.append(order[0])
    assert starts[0] == 0
    if n >= k:  # k rounds start at k different points
        assert len(set(starts)) == k


def test_interleaved_timing_order_warmup_and_columns():
    calls = []
    fake = {"a": [0.5, 0.10, 0.12, 0.11], "b": [0.20, 0.21, 0.60], "c": [0.3, 0.3, 0.3]}
    fake["a"] = fake["a"][1:]  # the warm-up sample of "a" is separate below

    def time_point(kw):
        calls.append(kw["name"])
        if len(calls) == 1:
            return 9.0, 0.9  # warm-up: must not be recorded
        return fake[kw["name"]].pop(0), 0.25

    points = {k: {"name": k} for k in "abc"}
    got = interleaved_timing(points, time_point, 3)
    assert calls[0] == "a" and len(calls) == 1 + 3 * 3
    rounds = [calls[1 + 3 * r: 4 + 3 * r] for r in range(3)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    a = got["a"]
    assert a["forward_s_per_audio_s"] == pytest.approx(0.11) and a["forward_s_per_audio_s_min"] == pytest.approx(0.10)
    assert a["forward_spread"] == pytest.approx((0.12 - 0.10) / 0.11) and a["timing_rounds"] == 3
    assert a["attention_share"] == 0.25
    assert got["b"]["forward_s_per_audio_s"] == pytest.approx(0.21)
    assert got["b"]["forward_spread"] == pytest.approx((0.60 - 0.20) / 0.21)
    assert got["c"]["forward_spread"] == 0.0


def test_one_sample_has_no_spread():
    s = summarize([(0.07, 0.5)])
    assert s["timing_rounds"] == 1 and math.isnan(s["forward_spread"]) and s["forward_s_per_audio_s"] == 0.07


def test_readable_speedup_rule():
    assert readable_speedup(0.10, 0.05, 0.05, 0.05)  # 2x apart, both tight
    assert not readable_speedup(0.10, 0.05, 0.097, 0.05)  # 3% apart, spreads 5%: not readable
    assert not readable_speedup(0.10, WIDE_SPREAD + 0.01, 0.05, 0.0)  # one point too wide
    assert not readable_speedup(0.10, float("nan"), 0.05, 0.0)  # one sample
    assert readable_speedup(0.10, WIDE_SPREAD, 0.05, 0.0)  # at the limit is still readable


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "3"])
def test_rounds_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="positive int"):
        check_rounds(bad)

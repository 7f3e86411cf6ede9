"""The numbers the report interprets with: uniform-attention baselines (held to a materialized uniform map
through satkern's own metrics), length-free values, per-utterance intervals, the near-uniform rule, and the
summary's statements about the segment and rank runs."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

import satkern
from satkern.metrics import (LENGTH_FREE_UNIFORM, head_metrics_from_map, kl_from_uniform, length_free,
                             uniform_head_metrics)
from satkern.report.interpret import NEAR_UNIFORM_KL, interpret
from satkern.report.load import load_analyze, load_rank, load_segment
from satkern.report.summary import order_harm, rank_paragraph, segment_paragraph

from report_runs import NEAR_UNIFORM_HEAD, L, H, make_analyze, make_rank, make_segment

LENGTHS = [1, 2, 3, 7, 50, 333]


@pytest.mark.parametrize("T", LENGTHS)
def test_uniform_formulas_equal_the_metrics_of_a_uniform_map(T):
    """G = log T, V = -log T, D = -(T^2 - 1)/(3 T^2), W = 1/T: what satkern's metrics give for a
    materialized uniform map, and what the fused op gives when every score is equal."""
    A = torch.full((1, 1, T, T), 1.0 / T, dtype=torch.float64)
    ref = head_metrics_from_map(A)
    u = uniform_head_metrics(T)
    for m in "GVDW":
        assert float(u[m]) == pytest.approx(float(getattr(ref, m)[0, 0]), abs=1e-12), m
    # the op itself: equal scores (k = 0) in a padded batch give a uniform map over the valid frames
    q = torch.randn(2, 3, T + 4, 8, dtype=torch.float64)
    k = torch.zeros_like(q)
    res = satkern.attention(q, k, torch.randn_like(q), lengths=torch.tensor([T, T + 4]), backend="cpu",
                            stats=("entropy", "distance", "colmass", "maxweight"))
    got = satkern.head_metrics(res)
    for m in "GVDW":
        np.testing.assert_allclose(getattr(got, m)[0].numpy(), float(u[m]), atol=1e-9, err_msg=m)
        np.testing.assert_allclose(getattr(got, m)[1].numpy(), float(uniform_head_metrics(T + 4)[m]), atol=1e-9)
    if T >= 2:
        for m in "GVDW":  # uniform attention sits at the uniform end of every length-free scale
            assert float(length_free(m, getattr(ref, m)[0, 0].item(), T)) == pytest.approx(LENGTH_FREE_UNIFORM[m], abs=1e-12)
    assert float(kl_from_uniform(float(ref.G[0, 0]), T)) == pytest.approx(0.0, abs=1e-12)


def test_length_free_ends_and_the_kl_identity():
    T = 40
    eye = torch.eye(T, dtype=torch.float64)
    vertical = torch.zeros(T, T, dtype=torch.float64)
    vertical[:, 3] = 1.0
    rng = np.random.default_rng(0)
    rand = torch.from_numpy(rng.dirichlet(np.full(T, 0.7), size=T))
    m = head_metrics_from_map(torch.stack([eye, vertical, rand])[None])
    G, V, D, W = (getattr(m, k)[0].numpy() for k in "GVDW")
    # the identity map: every row on one key, on the diagonal
    assert length_free("G", G[0], T) == pytest.approx(0.0, abs=1e-12)
    assert length_free("D", D[0], T) == pytest.approx(1.0, abs=1e-12)
    assert length_free("W", W[0], T) == pytest.approx(1.0, abs=1e-12)
    # one key takes all the attention: fully vertical
    assert length_free("V", V[1], T) == pytest.approx(1.0, abs=1e-12)
    # log T - G is the mean KL divergence of the rows from uniform, computed here from the rows
    r = rand.numpy()
    kl = np.mean(np.sum(r * np.log(r * T), axis=1))
    assert float(kl_from_uniform(G[2], T)) == pytest.approx(kl, rel=1e-10)
    assert 0 < length_free("G", G[2], T) < 1
    assert np.isnan(length_free("G", 0.0, 1)) and np.isnan(uniform_head_metrics(0)["G"])
    with pytest.raises(ValueError, match="metric"):
        length_free("X", 1.0, 5)


def test_interpretation_of_a_run_with_per_utterance_values(tmp_path):
    run = load_analyze(make_analyze(tmp_path / "a"))
    it = interpret(run)
    assert it.source == "frames" and it.has_intervals and len(it.table) == L * H
    per = run.utterances
    T = per.drop_duplicates("utterance")["frames"].to_numpy(dtype=float)
    base = it.baseline()
    assert base["G"] == pytest.approx(np.mean(np.log(T)))
    assert base["D"] == pytest.approx(np.mean(-(T ** 2 - 1) / (3 * T ** 2)))
    assert base["W"] == pytest.approx(np.mean(1 / T))
    for (l, h), g in per.groupby(["layer", "head"]):
        row = it.table[(it.table.layer == l) & (it.table["head"] == h)].iloc[0]
        free = g["V"].to_numpy() / np.log(g["frames"].to_numpy()) + 1
        assert row["V_free"] == pytest.approx(free.mean())
        assert row["V_lo"] == pytest.approx(np.percentile(free, 5)) and row["V_hi"] == pytest.approx(np.percentile(free, 95))
        kl = np.log(g["frames"].to_numpy()) - g["G"].to_numpy()
        assert row["KL_hi"] == pytest.approx(np.percentile(kl, 95))
        assert bool(row["near_uniform"]) == ((l, h) == NEAR_UNIFORM_HEAD) == (np.percentile(kl, 95) < NEAR_UNIFORM_KL)
    assert it.near_uniform_heads() == [NEAR_UNIFORM_HEAD]


def test_interpretation_falls_back_to_durations_then_the_mean_length(tmp_path):
    a = make_analyze(tmp_path / "a")
    per = pd.read_parquet(a / "utterances.parquet")
    per.drop(columns=["frames"]).to_parquet(a / "utterances.parquet", index=False)  # written before the column
    it = interpret(load_analyze(a))
    assert it.source == "duration"
    T = per.drop_duplicates("utterance")["frames"].to_numpy(dtype=float)
    assert it.baseline()["G"] == pytest.approx(np.mean(np.log(T)))  # the durations were whole frames here
    (a / "utterances.parquet").unlink()
    it = interpret(load_analyze(a))
    assert it.source == "mean" and not it.has_intervals
    assert it.baseline()["G"] == pytest.approx(math.log(T.mean()))
    assert it.table["G_lo"].isna().all()


def test_segment_summary_uses_the_head_chosen_on_the_tune_split(tmp_path):
    s = make_segment(tmp_path / "s")
    sc = pd.read_csv(s / "scores.csv")
    extra = sc[(sc.split == "test") & (sc.features == "attention")].assign(head="0:0", r_value=0.99)
    pd.concat([sc, extra]).to_csv(s / "scores.csv", index=False)  # a head never chosen on tune, best on test
    p = segment_paragraph(load_segment(s))
    chosen = sc[(sc.split == "test") & (sc.features == "attention")].iloc[0]
    assert p.facts["best"]["attention"] == (chosen["head"], pytest.approx(chosen["r_value"]))
    mfcc = sc[(sc.split == "test") & (sc.features == "mfcc")]["r_value"].item()
    assert p.agrees == (chosen["r_value"] > mfcc)
    assert f"{chosen['r_value']:.4f}" in p.text and "0.7999" in p.text


def test_rank_summary_mean_harm_by_hand(tmp_path):
    r = make_rank(tmp_path / "r")
    c = pd.read_csv(r / "curves.csv")
    harm = order_harm(c, "phone")
    base = c[(c.task == "phone") & (c.n_pruned == 0) & (c.order != "span")]["value"].mean()
    # steps 2 and 4 (6, the last shared step, left out); accuracy: harm = unpruned - value
    for o in ("G", "V", "D", "W", "random"):
        part = c[(c.task == "phone") & (c.order == o)]
        want = np.mean([base - part[part.n_pruned == n]["value"].mean() for n in (2, 4)])
        assert harm[o] == pytest.approx(want), o
    p = rank_paragraph(load_rank(r))
    assert p.facts["phone"]["harm"] == harm
    verdicts = [p.facts[t]["harm"]["D"] > p.facts[t]["harm"]["V"] > p.facts[t]["harm"]["G"] for t in p.facts]
    assert p.agrees == all(verdicts)
    assert f"holds on {sum(verdicts)} of {len(verdicts)} tasks" in p.text

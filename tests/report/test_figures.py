"""Each figure function: data in, a matplotlib Figure out, drawing exactly the data it was given."""
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from satkern.report import figures

rng = np.random.default_rng(0)


def _png_ok(fig):
    png = figures.to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_pruning_rank_follows_metrics_md_orders():
    x = np.array([0.3, 0.9, 0.3, np.nan, 0.1])
    # descending (G, V, D): highest first, ties by index, NaN last
    assert figures.pruning_rank(x, True).tolist() == [2, 1, 3, 5, 4]
    # ascending (W): lowest first
    assert figures.pruning_rank(x, False).tolist() == [2, 4, 3, 5, 1]


def test_head_scatter_draws_every_head():
    G, V, D = rng.normal(size=(3, 12))
    cats = ["global", "vertical", "diagonal"] * 4
    fig = figures.head_scatter(G, V, D, cats)
    assert isinstance(fig, Figure)
    pts = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(pts, np.c_[G, V])
    np.testing.assert_allclose(fig.axes[2].collections[0].get_offsets(), np.c_[V, D])
    _png_ok(fig)


def test_category_counts_and_rank_figure():
    layers = np.repeat(np.arange(3), 4)
    cats = np.array(["global", "vertical", "diagonal", "global"] * 3)
    fig = figures.category_counts(layers, cats)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [2, 2, 2, 1, 1, 1, 1, 1, 1]  # global, vertical, diagonal bars per layer
    G, W = rng.normal(size=(2, 12))
    fig = figures.rank_g_vs_w(G, W, cats)
    pts = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_array_equal(pts[:, 0], figures.pruning_rank(G, True))
    np.testing.assert_array_equal(pts[:, 1], figures.pruning_rank(W, False))
    _png_ok(fig)


def test_attention_map_shows_the_map_and_the_phones():
    A = rng.dirichlet(np.ones(30), size=30)
    mel = rng.normal(size=(61, 80))
    fig = figures.attention_map(A, mel, frame_rate_hz=50.0, logmel_hop_s=0.01, phone_starts=[0.0, 0.2],
                                phone_ends=[0.2, 0.6], phone_labels=["aa", "b"], title="t")
    main = [ax for ax in fig.axes if ax.get_xlabel() == "key time (s)"][0]
    np.testing.assert_allclose(main.images[0].get_array(), A.astype(np.float32))
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "aa" in texts and "b" in texts
    _png_ok(fig)


def test_segmentation_pr_prm_and_concentration():
    T = 20
    m = rng.dirichlet(np.ones(T), size=T)
    score = rng.uniform(size=T)
    kf = (m > 0.05).astype(np.uint8)
    fig = figures.segmentation(m, kf, score, hop=0.01, true_s=[0.05], pred_s=[0.06, 0.12])
    assert len(fig.axes) == 3
    np.testing.assert_allclose(fig.axes[2].lines[0].get_ydata(), score)
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), kf.astype(np.float32))
    assert sorted(l.get_label() for l in fig.axes[2].lines if not l.get_label().startswith("_")) == ["predicted", "true"]
    pr = pd.DataFrame({"features": ["mfcc"] * 3 + ["attention"] * 3, "head": [np.nan] * 3 + ["1:2"] * 3,
                       "alpha": 1.0, "beta": [1, 2, 3] * 2, "precision": [0.5, 0.6, 0.7, 0.8, 0.7, 0.6],
                       "recall": [0.9, 0.8, 0.7, 0.6, 0.7, 0.8], "f1": 0.5, "r_value": 0.5})
    fig = figures.pr_curves(pr)
    labels = sorted(l.get_label() for l in fig.axes[0].lines)
    assert labels == ["attention 1:2", "mfcc"]
    P = rng.normal(size=(4, 4))
    P[1, 2] = np.nan
    fig = figures.phoneme_relation_map(P, list("abcd"))
    shown = fig.axes[0].images[0].get_array()
    assert shown.mask[1, 2] and np.allclose(shown.data[~shown.mask], P[~np.isnan(P)])
    C = rng.normal(size=(6, 4))
    fig = figures.verticality_vs_concentration(rng.normal(size=6), C, ["global"] * 6)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets()[:, 1], C.max(-1))
    np.testing.assert_allclose(fig.axes[0].collections[1].get_offsets()[:, 1], C.min(-1))
    _png_ok(fig)


def test_pruning_curves_plot_means_over_seeds():
    rows = []
    for order, seeds in (("G", [0]), ("random", [0, 1, 2])):
        for seed in seeds:
            for n in (0, 2, 4):
                rows.append({"order": order, "seed": seed, "step": n // 2, "n_pruned": n, "span": np.nan,
                             "task": "phone", "value": 0.1 * n + seed})
    for r in (1, 4):
        rows.append({"order": "span", "seed": 0, "step": 0, "n_pruned": 0, "span": r, "span_mode": "zero",
                     "task": "phone", "value": 0.5 + r})
    fig = figures.pruning_curves(pd.DataFrame(rows))
    lines = {l.get_label(): l for l in fig.axes[0].lines}
    np.testing.assert_allclose(lines["G"].get_ydata(), [0.0, 0.2, 0.4])
    np.testing.assert_allclose(lines["random (mean of 3 seeds)"].get_ydata(), [1.0, 1.2, 1.4])
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [1.5, 4.5])
    _png_ok(fig)

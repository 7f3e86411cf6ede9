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
    labels = sorted(l.get_label() for l in fig.axes[0].lines if not l.get_label().startswith("_"))
    assert labels == ["attention 1:2", "every beta, in beta order", "mfcc", "upper-right envelope"]
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
    assert [ax.get_ylabel() for ax in fig.axes] == ["phone accuracy (frame level), higher is better"] * 2
    _png_ok(fig)


def test_phone_labels_are_thinned_so_none_overlap():
    assert figures.thin_labels([0.0, 0.05, 0.1, 0.3, 0.31, 0.5], 0.1) == [0, 2, 3, 5]
    # 120 phones of 20 ms over 2.4 s: far too many for the axis at 8 pt; every boundary still drawn
    starts = np.arange(120) * 0.02
    ends = starts + 0.02
    labs = [f"p{i}" for i in range(120)]
    fig = figures.attention_map(rng.dirichlet(np.ones(120), size=120), rng.normal(size=(241, 80)), frame_rate_hz=50.0,
                                logmel_hop_s=0.01, phone_starts=starts, phone_ends=ends, phone_labels=labs)
    top = [ax for ax in fig.axes if any(t.get_rotation() == 90 for t in ax.texts)][0]
    kept = sorted(t.get_position()[0] for t in top.texts if t.get_text() in labs)
    assert 5 < len(kept) < 120
    width_px = top.get_position().width * fig.get_size_inches()[0] * figures.DPI
    assert np.diff(kept).min() * width_px / 2.4 >= figures.LABEL_GAP_PX - 1e-6  # no two labels closer than a line
    assert all(t.get_fontsize() >= 7 for ax in fig.axes for t in ax.texts if t.get_text() in labs)
    assert len(top.lines) == 121  # 120 starts + the last end
    notes = [t.get_text() for ax in fig.axes for t in ax.texts if "left out" in t.get_text()]
    assert notes and notes[0].startswith(f"{120 - len(kept)} phone labels left out")


def test_prm_leaves_out_phones_never_seen_and_explains_grey():
    P = rng.normal(size=(5, 5))
    P[3, :] = np.nan
    P[:, 3] = np.nan  # phone "d" never occurs
    P[0, 1] = np.nan  # a pair never in one utterance
    fig = figures.phoneme_relation_map(P, list("abcde"), title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "e"]
    assert all(t.get_fontsize() >= figures.LABEL_PT for t in ax.get_xticklabels() + ax.get_yticklabels())
    shown = ax.images[0].get_array()
    assert shown.shape == (4, 4) and shown.mask[0, 1] and shown.mask.sum() == 1
    assert "grey cells: undefined" in ax.get_title() and "1 phones that never occur left out" in ax.get_title()


def test_pr_curves_draw_every_beta_and_the_envelope():
    pr = pd.DataFrame({"features": ["mfcc"] * 5, "head": [np.nan] * 5, "alpha": 1.0, "beta": [0.1, 0.5, 1.0, 2.0, 4.0],
                       "precision": [0.0, 0.3, 0.5, 0.4, 0.7], "recall": [0.0, 0.9, 0.6, 0.5, 0.2], "f1": 0.5,
                       "r_value": 0.5})
    assert figures.pareto_front([0.9, 0.6, 0.5, 0.2], [0.3, 0.5, 0.4, 0.7]) == [3, 1, 0]
    fig = figures.pr_curves(pr, tuned={"mfcc": (0.6, 0.5)})
    lines = fig.axes[0].lines
    assert list(lines[0].get_xdata()) == [0.9, 0.6, 0.5, 0.2]  # beta order, the no-hit point left out
    assert list(lines[1].get_xdata()) == [0.2, 0.6, 0.9] and lines[1].get_label() == "mfcc"
    assert list(lines[2].get_xdata()) == [0.6]  # the tuned ring


def test_scatters_mark_uniform_attention_and_near_uniform_heads_with_few_ticks():
    G, V, D = rng.uniform(size=(3, 12))
    near = np.zeros(12, bool)
    near[[2, 5]] = True
    fig = figures.head_scatter(G, V, D, ["global", "vertical", "diagonal"] * 4, uniform=(1.0, 0.0, 0.0),
                               near_uniform=near, length_free=True)
    for ax in fig.axes:
        assert len(ax.get_xticks()) <= 6  # tick labels never run together
    np.testing.assert_allclose(fig.axes[2].collections[1].get_offsets(), np.c_[V, D][near])  # the rings
    assert fig.axes[0].lines[0].get_xdata()[0] == 1.0 and fig.axes[0].lines[1].get_ydata()[0] == 0.0
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["global", "vertical", "diagonal",
                                                                  "uniform attention", "near uniform"]
    _png_ok(fig)


def test_head_intervals_draw_each_heads_mean_and_interval():
    t = pd.DataFrame({"layer": [0, 0, 1], "head": [0, 1, 0], "category": ["global", "vertical", "diagonal"]})
    for m in "GVDW":
        t[f"{m}_free"] = rng.uniform(size=3)
        t[f"{m}_lo"] = t[f"{m}_free"] - 0.1
        t[f"{m}_hi"] = t[f"{m}_free"] + 0.2
    fig = figures.head_intervals(t)
    ax_v = fig.axes[1]
    np.testing.assert_allclose(ax_v.collections[0].get_offsets()[:, 1], t["V_free"])
    bars = [l for l in ax_v.lines if len(l.get_xdata()) == 2 and l.get_xdata()[0] == l.get_xdata()[1]
            and float(l.get_xdata()[0]).is_integer()]  # not the layer separators at i - 0.5
    np.testing.assert_allclose(sorted(b.get_ydata()[1] for b in bars), sorted(t["V_hi"]))
    _png_ok(fig)

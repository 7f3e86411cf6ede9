"""satkern.segment's math against plain float64 loops written here from METRICS.md "Phoneme segmentation"."""
import math

import numpy as np
import pytest
import torch

from satkern.segment import (SegmentationScores, boundaries, count_hits, evaluate, filtered_kernel_gram,
                             kernel_gram, minimal_plateaus, score_curve, score_curves, true_boundaries,
                             upsample_map)
from satkern.segment.boundaries import pairwise_distances


# ------------------------------------------------------------------ plain loop implementations
def loop_kernel_gram(v, alpha):
    T = len(v)
    K = [[0.0] * T for _ in range(T)]
    for i in range(T):
        for j in range(T):
            K[i][j] = math.exp(-math.sqrt(sum((a - b) ** 2 for a, b in zip(v[i], v[j]))) / alpha)
    return K


def loop_filtered(K, beta):
    T = len(K)
    Kf = [[0] * T for _ in range(T)]
    for i in range(T):
        eps = beta * sum(K[i]) / T
        for j in range(T):
            lo, hi = min(i, j), max(i, j)
            Kf[i][j] = int(all(K[i][k] > eps for k in range(lo, hi + 1)))
    return Kf


def loop_score(Kf):
    T = len(Kf)
    S = []
    for t in range(T):
        s = 0
        for k in range(-T, T + 1):
            if 0 <= t - k < T and 0 <= t + k < T:
                s += Kf[t - k][t + k]
        S.append(s)
    return S


def loop_plateau_boundaries(S, hop):
    T = len(S)
    out = []
    a = 0
    while a < T:
        b = a
        while b + 1 < T and S[b + 1] == S[a]:
            b += 1
        if 0 < a and b < T - 1 and S[a - 1] > S[a] and S[b + 1] > S[b]:
            out.append((a + b + 1) / 2 * hop)
        a = b + 1
    return out


def loop_boundaries(v, alpha, beta, hop):
    return loop_plateau_boundaries(loop_score(loop_filtered(loop_kernel_gram(v, alpha), beta)), hop)


def block_features(gen, sizes, dim, noise):
    """Rows in blocks (one random centre per block) plus noise: phone-like segments."""
    rows = []
    for n in sizes:
        c = torch.randn(dim, generator=gen, dtype=torch.float64)
        rows.append(c + noise * torch.randn(n, dim, generator=gen, dtype=torch.float64))
    return torch.cat(rows)


def cases():
    g = torch.Generator().manual_seed(1234)
    out = []
    for T in (1, 2, 3):
        out.append((f"noise T={T}", torch.randn(T, 4, generator=g, dtype=torch.float64)))
    out.append(("noise T=17", torch.randn(17, 6, generator=g, dtype=torch.float64)))
    out.append(("blocks", block_features(g, [5, 3, 7, 4, 6], 8, 0.2)))
    out.append(("blocks exact duplicates", block_features(g, [4, 6, 2, 5], 5, 0.0)))  # exact plateaus
    out.append(("blocks noisy", block_features(g, [9, 2, 8], 3, 0.8)))
    out.append(("all-equal rows", torch.randn(1, 5, generator=g, dtype=torch.float64).repeat(9, 1)))
    return out


CASES = cases()
# beta = 0.05: every K > eps (Kf full); beta = 50: eps > 1 >= K (Kf empty); 1.0 on all-equal rows: K == eps
BETAS = (0.05, 0.6, 1.0, 1.3, 50.0)
ALPHAS = (0.3, 1.0, 4.0)


@pytest.mark.parametrize("name,v", CASES, ids=[c[0] for c in CASES])
def test_each_step_matches_loops(name, v):
    rows = v.tolist()
    worst = 0.0
    for alpha in ALPHAS:
        K = kernel_gram(v, alpha)
        K_ref = loop_kernel_gram(rows, alpha)
        assert K.dtype == torch.float64 and K.shape == (len(rows), len(rows))
        if rows:
            worst = max(worst, float((K - torch.tensor(K_ref, dtype=torch.float64)).abs().max()))
        for beta in BETAS:
            # the loop's own K into both, so the threshold comparisons see the same numbers
            Kt = torch.tensor(K_ref, dtype=torch.float64).reshape(len(rows), len(rows))
            Kf = filtered_kernel_gram(Kt, beta)
            Kf_ref = loop_filtered(K_ref, beta)
            assert Kf.dtype == torch.uint8
            assert Kf.tolist() == Kf_ref, (name, alpha, beta)
            S = score_curve(Kf)
            assert S.tolist() == loop_score(Kf_ref), (name, alpha, beta)
            got = boundaries(v, alpha, beta, 0.01).tolist()
            assert got == loop_boundaries(rows, alpha, beta, 0.01), (name, alpha, beta)
            # the batched grid paths (direct for few betas, cumulative minimum for many) agree
            d = pairwise_distances(v)
            assert score_curves(d, alpha, [beta, 2 * beta])[0].tolist() == loop_score(Kf_ref)
            many = score_curves(d, alpha, [beta / 3, beta / 2, beta, 2 * beta, 3 * beta])
            assert many[2].tolist() == loop_score(Kf_ref)
            assert many[0].tolist() == loop_score(loop_filtered(K_ref, beta / 3))
    assert worst <= 1e-13, f"{name}: worst |K - K_loop| = {worst}"


def test_kf_full_and_empty():
    g = torch.Generator().manual_seed(7)
    v = block_features(g, [4, 5], 3, 0.3)
    K = kernel_gram(v, 1.0)
    assert bool((filtered_kernel_gram(K, 1e-3) == 1).all())  # every K > eps
    assert bool((filtered_kernel_gram(K, 1e3) == 0).all())  # eps > 1 >= K
    # full Kf: S[t] = number of k with both indices inside = 2 min(t, T-1-t) + 1 -> no interior minimum
    T = v.shape[0]
    assert score_curve(filtered_kernel_gram(K, 1e-3)).tolist() == [2 * min(t, T - 1 - t) + 1 for t in range(T)]
    assert boundaries(v, 1.0, 1e-3, 0.01).numel() == 0
    assert boundaries(v, 1.0, 1e3, 0.01).numel() == 0  # S == 0 everywhere: one plateau touching both ends


def test_all_equal_rows_distances_are_exactly_zero():
    v = torch.randn(1, 300, dtype=torch.float64).repeat(50, 1) * 1e3
    d = pairwise_distances(v)
    assert bool((d == 0).all())
    assert bool((kernel_gram(v, 0.5) == 1).all())
    # beta = 1: K == eps exactly, so nothing passes (strict >)
    assert bool((filtered_kernel_gram(kernel_gram(v, 0.5), 1.0) == 0).all())


def test_distances_zero_diagonal_float32():
    v = torch.rand(200, 64)
    d = pairwise_distances(v)
    assert d.dtype == torch.float32
    assert bool((d.diagonal() == 0).all())
    ref = torch.cdist(v.double(), v.double(), compute_mode="donot_use_mm_for_euclid_dist")
    assert float((d.double() - ref).abs().max()) < 1e-5


def test_minimal_plateaus_hand_made():
    S = torch.tensor([5, 3, 3, 4, 2, 6, 6])
    a, b = minimal_plateaus(S)
    assert a.tolist() == [1, 4] and b.tolist() == [2, 4]
    # a plateau touching an end is not interior; a "step" (down then flat then down) is not a minimum
    a, b = minimal_plateaus(torch.tensor([1, 1, 2, 3, 2, 2, 1]))
    assert a.numel() == 0
    a, b = minimal_plateaus(torch.tensor([3, 2, 2, 1, 4]))
    assert a.tolist() == [3] and b.tolist() == [3]
    for T in (0, 1, 2):
        assert minimal_plateaus(torch.arange(T))[0].numel() == 0


def test_upsample_map_known_rows():
    A = torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=torch.float64)
    U = upsample_map(A, 2)
    expect = torch.tensor([[0.125, 0.125, 0.375, 0.375]] * 2 + [[0.25, 0.25, 0.25, 0.25]] * 2, dtype=torch.float64)
    assert torch.equal(U, expect)
    # loop form of np.kron(A, ones) / row sums, on a random map with a zero (padded) row
    g = torch.Generator().manual_seed(3)
    A = torch.softmax(torch.randn(5, 5, generator=g, dtype=torch.float64), -1)
    A[4] = 0
    R = 3
    big = np.kron(A.numpy(), np.ones((R, R)))
    for i in range(big.shape[0]):
        s = big[i].sum()
        if s:
            big[i] /= s
    U = upsample_map(A, R)
    assert U.shape == (15, 15)
    assert np.allclose(U.numpy(), big, rtol=0, atol=1e-15)
    assert bool((U[12:] == 0).all())
    assert torch.allclose(upsample_map(A, 1), A, rtol=0, atol=1e-15)  # rows re-normalized: rounding only
    # batched [H, T, T]
    assert torch.equal(upsample_map(torch.stack([A, A]), R)[1], U)


def test_true_boundaries():
    segs = [(0.0, 0.2, "h#"), (0.2, 0.35, "sh"), (0.35, 0.5, "iy"), (0.6, 0.9, "ae"), (0.9, 1.2, "h#")]
    assert true_boundaries(segs).tolist() == [0.2, 0.35, 0.5, 0.6, 0.9]
    # times closer than 1 ms count once (the earlier kept); 1 ms apart count twice
    segs = [(0.0, 0.1, "a"), (0.1005, 0.3, "b"), (0.301, 0.4, "c")]
    assert true_boundaries(segs).tolist() == [0.1, 0.3, 0.301]
    assert true_boundaries([(0.0, 1.0, "a")]).size == 0
    assert true_boundaries([]).size == 0


def greedy_nearest_first(true, pred, tol):
    """The matcher the strict count is NOT: globally closest pairs first."""
    pairs = sorted((abs(t - p), i, j) for i, t in enumerate(true) for j, p in enumerate(pred) if abs(t - p) <= tol)
    used_t, used_p, hits = set(), set(), 0
    for _, i, j in pairs:
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
            hits += 1
    return hits


def brute_force_max_matching(true, pred, tol):
    import itertools

    small, large = (true, pred) if len(true) <= len(pred) else (pred, true)
    best = 0
    for perm in itertools.permutations(range(len(large)), len(small)):
        best = max(best, sum(abs(small[i] - large[j]) <= tol for i, j in enumerate(perm)))
    return best


def test_hits_largest_matching_not_nearest_first():
    true, pred = [0.100, 0.130], [0.118, 0.148]
    # nearest first pairs 0.118 with 0.130 (12 ms) and strands both others (48 ms apart)
    assert greedy_nearest_first(true, pred, 0.02) == 1
    assert count_hits(true, pred, 0.02) == 2 == brute_force_max_matching(true, pred, 0.02)
    true, pred = [0.100, 0.135, 0.170], [0.119, 0.152, 0.188]
    assert greedy_nearest_first(true, pred, 0.02) < count_hits(true, pred, 0.02) == 3
    # exactly tol apart is a hit (binary rounding of 0.145 - 0.125 does not matter); a bit more is not
    assert count_hits([0.125], [0.145], 0.02) == 1
    assert count_hits([0.125], [0.1451], 0.02) == 0
    # one-to-one: two predictions near one true boundary give one hit
    assert count_hits([0.5], [0.49, 0.51], 0.02) == 1
    rng = np.random.default_rng(5)
    for _ in range(200):
        t = np.sort(rng.uniform(0, 0.3, rng.integers(0, 6))).tolist()
        p = np.sort(rng.uniform(0, 0.3, rng.integers(0, 6))).tolist()
        assert count_hits(t, p, 0.02) == brute_force_max_matching(t, p, 0.02)


def test_r_value_hand_derived():
    # 8 hits, 10 predicted, 10 true: P = HR = 0.8, OS = 0, r1 = 0.2, r2 = -0.2/sqrt 2
    s = SegmentationScores.from_counts(8, 10, 10)
    assert s.precision == 0.8 and s.recall == 0.8 and s.os == 0.0
    assert math.isclose(s.f1, 0.8, rel_tol=1e-15)
    assert math.isclose(s.r_value, 1 - (0.2 + 0.2 / math.sqrt(2)) / 2, rel_tol=1e-15)  # 0.829289...
    # over-segmentation: 10 hits, 20 predicted, 10 true: HR = 1, OS = 1, r1 = 1, r2 = -1/sqrt 2
    s = SegmentationScores.from_counts(10, 20, 10)
    assert math.isclose(s.r_value, 1 - (1 + 1 / math.sqrt(2)) / 2, rel_tol=1e-15)
    assert math.isclose(s.precision, 0.5) and math.isclose(s.f1, 2 / 3)
    # nothing predicted: P = 0/0 = 0, HR = 0, OS = -1, r1 = sqrt 2, r2 = 0 -> R = 1 - sqrt(2)/2
    s = SegmentationScores.from_counts(0, 0, 5)
    assert s.precision == 0.0 and s.f1 == 0.0 and s.os == -1.0
    assert math.isclose(s.r_value, 1 - math.sqrt(2) / 2)
    # perfect: R = 1
    assert SegmentationScores.from_counts(7, 7, 7).r_value == 1.0


def test_evaluate_sums_over_utterances():
    true = [np.array([0.1, 0.3]), np.array([0.5]), np.array([])]
    pred = [torch.tensor([0.11, 0.2], dtype=torch.float64), np.array([0.49, 0.8]), np.array([0.1])]
    s = evaluate(true, pred, tolerance=0.02)
    assert (s.hits, s.n_pred, s.n_true) == (2, 5, 3)
    assert s == SegmentationScores.from_counts(2, 5, 3)
    assert evaluate(true, pred, tolerance=0.2).hits == 3


@pytest.mark.parametrize("call,arg", [
    (lambda: kernel_gram(torch.randn(3, 2), 0.0), "alpha"),
    (lambda: kernel_gram(torch.randn(3, 2), -1.0), "alpha"),
    (lambda: boundaries(torch.randn(3, 2), 1.0, 0.0, 0.01), "beta"),
    (lambda: boundaries(torch.randn(3, 2), 1.0, 1.0, 0.0), "hop"),
    (lambda: filtered_kernel_gram(torch.rand(3, 3), float("nan")), "beta"),
    (lambda: evaluate([[0.1]], [[0.1]], tolerance=0.0), "tolerance"),
    (lambda: evaluate([[0.1]], [[0.1]], tolerance=-0.02), "tolerance"),
    (lambda: count_hits([0.1], [0.1], tolerance=0), "tolerance"),
    (lambda: evaluate([[0.1]], [], tolerance=0.02), "true"),
    (lambda: kernel_gram(torch.randn(3), 1.0), "v"),
    (lambda: upsample_map(torch.rand(3, 3), 0), "factor"),
    (lambda: score_curves(torch.rand(3, 3), 1.0, []), "betas"),
])
def test_bad_arguments_name_the_argument(call, arg):
    with pytest.raises(ValueError, match=f"'{arg}'"):
        call()

"""Phoneme segmentation from attention (paper sec. 5, supplementary sec. 2; METRICS.md "Phoneme segmentation").

Public API (torch, any device, float64-exact)::

    A_up = upsample_map(A, R)                    # [R T_e, R T_e], rows re-normalized
    K = kernel_gram(v, alpha)                    # [T, T]
    Kf = filtered_kernel_gram(K, beta)           # [T, T] uint8
    S = score_curve(Kf)                          # [T] int64
    b = boundaries(v, alpha, beta, hop)          # seconds, float64
    t = true_boundaries([(start_s, end_s, label), ...])
    scores = evaluate([t, ...], [b, ...], tolerance=0.02)   # SegmentationScores

The corpus job (``satkern segment``) is :func:`satkern.segment.job.segment_corpus`.
"""
from .boundaries import (SegmentationScores, boundaries, count_hits, curve_boundaries, evaluate,
                         filtered_kernel_gram, kernel_gram, minimal_plateaus, pairwise_distances,
                         plateau_times, r_value, score_curve, score_curves, true_boundaries, upsample_map)

__all__ = ["upsample_map", "kernel_gram", "filtered_kernel_gram", "score_curve", "boundaries",
           "true_boundaries", "evaluate", "SegmentationScores", "count_hits", "r_value", "minimal_plateaus",
           "plateau_times", "pairwise_distances", "score_curves", "curve_boundaries"]

"""Head metrics and categorization (METRICS.md)."""
import torch

import satkern
from satkern.metrics import categorize


def test_categorize_by_best_rank():
    # 3 heads: head 0 has the largest G, head 1 the largest V, head 2 the largest D
    G = torch.tensor([3.0, 1.0, 2.0])
    V = torch.tensor([-2.0, -0.5, -1.0])
    D = torch.tensor([-0.3, -0.2, -0.01])
    assert categorize(G, V, D) == ["global", "vertical", "diagonal"]


def test_categorize_ties_go_global_then_vertical():
    G = torch.tensor([2.0, 1.0])
    V = torch.tensor([-1.0, -2.0])
    D = torch.tensor([-0.1, -0.2])
    # head 0 ranks 1st under all three -> global; head 1 ranks 2nd under all three -> global
    assert categorize(G, V, D) == ["global", "global"]
    G2 = torch.tensor([1.0, 2.0])
    # head 0: G rank 2, V rank 1, D rank 1 -> vertical (tie V/D goes vertical)
    assert categorize(G2, V, D)[0] == "vertical"


def test_categorize_keeps_shape_order_and_nan_last():
    G = torch.tensor([[1.0, float("nan")], [0.5, 0.2]])
    V = torch.tensor([[-3.0, -1.0], [-2.0, -4.0]])
    D = torch.tensor([[-0.5, -0.6], [-0.1, -0.7]])
    cats = categorize(G, V, D)
    assert len(cats) == 4
    assert cats[0] == "global"      # G rank 1
    assert cats[1] == "vertical"    # V rank 1, G NaN ranks last
    assert cats[2] == "diagonal"    # D rank 1


def test_head_metrics_uses_result_lengths_and_override():
    q = torch.randn(2, 2, 6, 4)
    res = satkern.attention(q, q, q, lengths=torch.tensor([6, 3]), stats=satkern.STAT_NAMES, backend="reference")
    m = satkern.head_metrics(res)
    # the same utterance alone
    one = satkern.attention(q[1:, :, :3], q[1:, :, :3], q[1:, :, :3], stats=satkern.STAT_NAMES, backend="reference")
    m1 = satkern.head_metrics(one)
    for f in "GVDW":
        torch.testing.assert_close(getattr(m, f)[1:], getattr(m1, f))

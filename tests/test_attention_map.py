"""satkern.attention_map: the maps as the op defines them, checked against the reference backend (its output
is A @ v, its statistics describe the map before span zeroing) and against a per-utterance softmax written
out here, on fresh random inputs with padding, odd lengths, biases, both span modes and head masks."""
import math

import pytest
import torch

import satkern

B, H, T, D = 3, 4, 13, 8
LENGTHS = [13, 9, 1]  # full, odd, a single frame


def _inputs(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=dtype) for _ in range(3))
    bias = torch.randn(H, T, T, generator=g, dtype=dtype)
    return q, k, v, bias


def _by_hand(q, k, bias, n, span, span_mode, scale):
    """One utterance's [H, n, n] map: softmax over its n valid keys (renorm: the band only), then
    (zero) the weights outside the band set to 0."""
    s = (q[:, :n].double() @ k[:, :n].double().transpose(-1, -2)) * scale + bias[:, :n, :n].double()
    i = torch.arange(n)
    band = (i[:, None] - i[None, :]).abs() <= (span if span is not None else n)
    if span_mode == "renorm":
        s = s.masked_fill(~band, float("-inf"))
    A = torch.softmax(s, -1)
    return torch.where(band, A, torch.zeros(()))


CASES = [(None, "zero", None), (2, "zero", None), (2, "renorm", None), (0, "renorm", None),
         (3, "zero", [1, 0, 1, 1]), (None, "zero", [[1, 1, 0, 1], [0, 1, 1, 1], [1, 1, 1, 0]])]


@pytest.mark.parametrize("span,span_mode,head_mask", CASES)
def test_map_equals_the_reference_backend_and_a_softmax_by_hand(span, span_mode, head_mask):
    seed = 7 + (span or 0) + 3 * len(span_mode) + (0 if head_mask is None else len(head_mask))
    q, k, v, bias = _inputs(seed)
    lengths = torch.tensor(LENGTHS)
    kw = dict(lengths=lengths, bias=bias, span=span, span_mode=span_mode,
              head_mask=None if head_mask is None else torch.tensor(head_mask))
    A = satkern.attention_map(q, k, v, **kw)
    assert A.shape == (B, H, T, T) and A.dtype == torch.float64
    ref = satkern.attention(q, k, v, backend="reference", stats=("entropy", "maxweight"), **kw)
    torch.testing.assert_close(A @ v, ref.out, rtol=1e-12, atol=1e-12)  # the weights the output uses
    keep = torch.ones(B, H, dtype=torch.bool) if head_mask is None else torch.tensor(head_mask).bool().expand(B, H)
    for b, n in enumerate(LENGTHS):
        want = _by_hand(q[b], k[b], bias, n, span, span_mode, D ** -0.5)
        want = torch.where(keep[b][:, None, None], want, torch.zeros(()))
        torch.testing.assert_close(A[b, :, :n, :n], want, rtol=1e-12, atol=1e-12)
        assert (A[b, :, n:] == 0).all() and (A[b, :, :, n:] == 0).all()  # padded rows and keys
    # the map the statistics describe: before the zeroing in "zero", the same in "renorm"
    As = satkern.attention_map(q, k, for_statistics=True, **kw)
    if span is None or span_mode == "renorm":
        assert torch.equal(As, A)
    valid = torch.arange(T)[None, :] < lengths[:, None]
    ent = -torch.special.xlogy(As, As).sum(-1)
    torch.testing.assert_close(ent[keep][valid[:, None].expand(B, H, T)[keep]],
                               ref.entropy.double()[keep][valid[:, None].expand(B, H, T)[keep]], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(As.amax(-1)[keep], ref.maxweight.double()[keep], rtol=1e-6, atol=1e-6)
    rows = As.sum(-1)
    assert torch.allclose(rows[valid[:, None].expand(B, H, T) & keep[..., None]], torch.ones((), dtype=torch.float64))


def test_float64_by_default_and_dtype_on_request():
    q, k, _, _ = _inputs(3, torch.float32)
    A = satkern.attention_map(q, k)
    assert A.dtype == torch.float64
    A32 = satkern.attention_map(q, k, dtype=torch.float32)
    assert A32.dtype == torch.float32
    torch.testing.assert_close(A32.double(), A, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(A, satkern.attention_map(q.double(), k.double()), rtol=1e-6, atol=1e-7)


def test_empty_and_nan_rows_follow_the_op():
    q, k, v, _ = _inputs(11)
    bias = torch.zeros(1, 1, T, T, dtype=torch.float64)
    bias[..., 4, :] = float("-inf")  # row 4 of every head masks every key: an empty row
    q[1, 2, 5, 0] = float("nan")  # one NaN query row
    A = satkern.attention_map(q, k, bias=bias)
    res = satkern.attention(q, k, v, bias=bias, backend="reference")
    assert (A[:, :, 4] == 0).all() and (res.out[:, :, 4] == 0).all()
    assert torch.isnan(A[1, 2, 5]).all() and torch.isnan(res.out[1, 2, 5]).all()
    others = ~torch.isnan(A)
    assert int((~others).sum()) == T  # nothing else is NaN


def test_scale_and_errors_as_the_op():
    q, k, v, _ = _inputs(5)
    A = satkern.attention_map(q, k, scale=0.3)
    torch.testing.assert_close(A, torch.softmax(q @ k.transpose(-1, -2) * 0.3, -1), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="span_mode"):
        satkern.attention_map(q, k, span=2, span_mode="wrap")
    with pytest.raises(ValueError, match="'v'"):
        satkern.attention_map(q, k, v[:, :, :5])
    assert math.isclose(float(satkern.attention_map(q, k, lengths=torch.tensor([1, 1, 1]))[0, 0, 0, 0]), 1.0)

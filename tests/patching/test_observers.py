"""The patch's observer API (h.observe, satkern.patch(observers=...)) and adapter API (Adapter,
set_instance_attr, on_remove): what observers receive per layer call, statistics asked for by an observer,
the order of before/after, chunked forwards, and an adapter written against the public API only."""
import functools

import pytest
import torch
from torch import nn

import satkern
from satkern.models import load_model
from satkern.patching import Adapter, Observer, owner, register_adapter, unregister_adapter


def _tera(seed=0):
    torch.manual_seed(seed)
    sm = load_model("tiny-tera")
    sm.model.eval()
    g = torch.Generator().manual_seed(seed + 1)
    waves = [torch.randn(4000, generator=g) * 0.1, torch.randn(2500, generator=g) * 0.1]
    inputs, frames = sm.prepare(waves)
    return sm, inputs, frames


def test_a_function_observer_sees_every_layer_call():
    sm, inputs, frames = _tera()
    calls = []
    with satkern.patch(sm, stats=("entropy",)) as h:
        h.observe(calls.append)
        with torch.inference_mode():
            sm(inputs)
    assert [c.layer for c in calls] == list(range(h.num_layers))
    for c in calls:
        B, H, T, D = c.q.shape
        assert (B, H) == (2, h.num_heads) and c.k.shape == c.v.shape == c.q.shape
        assert c.lengths.tolist() == frames.tolist() and c.host_lengths.tolist() == frames.tolist()
        assert c.scale == pytest.approx(D ** -0.5) and c.span is None and c.head_mask is None and c.chunk is None
        assert c.result.entropy is not None and c.out.shape == c.q.shape
        # the result's statistics describe the map satkern.attention_map gives for the call
        A = c.attention_map(for_statistics=True)
        valid = torch.arange(T)[None, None, :] < c.lengths[:, None, None]
        ent = -torch.special.xlogy(A, A).sum(-1)
        torch.testing.assert_close(ent[valid.expand(B, H, T)], c.result.entropy.double()[valid.expand(B, H, T)],
                                   rtol=1e-5, atol=1e-5)


def test_an_observer_gets_the_statistics_it_asks_for_without_changing_the_patch():
    sm, inputs, _ = _tera()
    seen = []
    with torch.inference_mode():
        with satkern.patch(sm, stats=()) as plain:
            want = sm(inputs).last_hidden_state
        with satkern.patch(sm, stats=("distance",)) as h:
            h.observe(lambda c: seen.append(c.result.maxweight), stats=("maxweight",))
            got = sm(inputs).last_hidden_state
    assert len(seen) == h.num_layers and all(m is not None and m.shape[:2] == (2, h.num_heads) for m in seen)
    assert h.metrics.W is None and h.metrics.D is not None  # the patch's own metrics: what it was asked for
    assert plain.metrics.G is None
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # observers never change the outputs


def test_before_in_order_after_in_reverse_and_unobserve():
    sm, inputs, _ = _tera()
    log = []

    class Tagged(Observer):
        def __init__(self, tag):
            self.tag = tag

        def before(self, call):
            log.append(("before", self.tag, call.result is None))

        def after(self, call):
            log.append(("after", self.tag, call.result is not None))

    a, b = Tagged("a"), Tagged("b")
    with satkern.patch(sm, stats=(), observers=[a, b]) as h:
        with torch.inference_mode():
            sm(inputs)
        assert log[:4] == [("before", "a", True), ("before", "b", True), ("after", "b", True), ("after", "a", True)]
        assert len(log) == 4 * h.num_layers
        h.unobserve(a)
        log.clear()
        with torch.inference_mode():
            sm(inputs)
    assert {t for _, t, _ in log} == {"b"}


def test_refinement_reaches_observers_and_maps():
    sm, inputs, frames = _tera()
    calls = []
    with satkern.patch(sm, stats=(), prune={(0, 1)}, span={1: 2}, span_mode="zero", observers=[calls.append]) as h:
        with torch.inference_mode():
            sm(inputs)
        assert h.refines(0) and h.refines(1)
        keep, span = h.refinement(0)
        assert keep.tolist() == [True, False, True, True] and span is None
    first, second = calls
    assert first.head_mask.tolist() == [True, False, True, True] and second.span == 2
    assert (first.attention_map([1, 0])[:, 0] == 0).all()  # the pruned head's map is 0
    A = second.attention_map()
    i = torch.arange(A.shape[-1])
    assert (A[..., (i[:, None] - i[None, :]).abs() > 2] == 0).all()  # "zero": weights outside the band are 0
    T = A.shape[-1]
    valid = torch.arange(T)[None, :] < second.lengths[:, None]  # [B, T]
    v = second.v.masked_fill(~valid[:, None, :, None], 0)
    got = (A.to(v.dtype) @ v).transpose(1, 2)[valid]  # valid rows: the op's output is A @ v
    torch.testing.assert_close(got, second.out.transpose(1, 2)[valid], rtol=1e-5, atol=1e-6)


def test_chunked_forward_hands_each_call_its_slot():
    sm, inputs, frames = _tera()
    sm.model.sequence_length = 7  # feature frames: the inputs run as several s3prl chunks
    slots, plans = [], []

    class Chunks(Observer):
        def after(self, call):
            slots.append((call.layer, call.chunk.index, call.chunk.utterances.tolist(), call.lengths.tolist()))

        def end_chunks(self, plan):
            plans.append((plan.total.tolist(), plan.complete))

    with satkern.patch(sm, stats=("entropy",), observers=[Chunks()]) as h:
        with torch.inference_mode():
            sm(inputs)
    assert plans == [(frames.tolist(), True)]
    assert h.lengths.tolist() == frames.tolist()
    per_layer = {}
    for layer, j, utts, lengths in slots:
        per_layer.setdefault(layer, []).append(j)
        assert len(utts) == len(lengths) and all(n <= 7 for n in lengths)
    assert per_layer == {l: list(range(len(per_layer[0]))) for l in range(h.num_layers)} and len(per_layer[0]) > 1


def test_two_observers_giving_label_weights_are_refused():
    sm, inputs, frames = _tera()

    class Labels(Observer):
        def label_weights(self, call):
            return torch.ones(call.q.shape[0], call.q.shape[2], 2)

    with satkern.patch(sm, stats=(), observers=[Labels(), Labels()]):
        with pytest.raises(RuntimeError, match="2 observers give label weights"):
            with torch.inference_mode():
                sm(inputs)
    with pytest.raises(TypeError, match="Observer or a function"):
        with satkern.patch(sm, stats=()) as h:
            h.observe(42)
    with pytest.raises(ValueError, match="observer stats"):
        satkern.patch(sm, stats=()).observe(print, stats=("wrong",))


# ------------------------------------------------------------------------------------------ adapter API
class ToyAttention(nn.Module):
    """A self-attention whose core (``self.core``) an adapter can reroute."""

    num_heads = 2

    def __init__(self, dim=8):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def core(self, q, k, v, lengths):
        T = q.shape[2]
        s = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        s = s.masked_fill(torch.arange(T)[None, None, None, :] >= lengths[:, None, None, None], float("-inf"))
        return torch.softmax(s, -1) @ v

    def forward(self, x, lengths):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        return x + self.core(q, k, v, lengths).transpose(1, 2).reshape(B, T, C)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([ToyAttention(), ToyAttention()])
        self.label = "toy"

    def forward(self, x, lengths):
        for layer in self.layers:
            x = layer(x, lengths)
        return x


def _toy_core(module, q, k, v, lengths):
    return owner(module).run(module, q, k, v, lengths=lengths, scale=None)


class ToyAdapter(Adapter):
    description = "the test's toy attention"

    def __init__(self):
        self.undone = []

    def find(self, model):
        return [(name, m) for name, m in model.named_modules() if isinstance(m, ToyAttention)]

    def install(self, patch, model, found):
        for _, m in found:
            patch.set_instance_attr(m, "core", functools.partial(_toy_core, m))
        patch.set_instance_attr(model, "label", "patched")  # an instance attribute that existed before
        patch.on_remove(lambda: self.undone.append(True))


def test_an_adapter_written_against_the_public_api():
    torch.manual_seed(0)
    model = Toy().eval()
    x = torch.randn(2, 9, 8)
    lengths = torch.tensor([9, 6])
    with torch.no_grad():
        want = model(x, lengths)
    adapter = ToyAdapter()
    register_adapter(adapter)
    try:
        with pytest.raises(TypeError, match="supported: .*the test's toy attention"):
            satkern.patch(nn.Linear(2, 2))  # the adapter's description joins the error message
        with satkern.patch(model) as h:
            assert model.label == "patched" and owner(model.layers[1]) is h
            with torch.no_grad():
                got = model(x, lengths)
        assert h.num_layers == 2 and h.metrics.G.shape == (2, 2, 2) and h.lengths.tolist() == [9, 6]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # padded rows included
    finally:
        unregister_adapter(adapter)
    assert adapter.undone == [True] and model.label == "toy"
    assert all("core" not in m.__dict__ and owner(m) is None for m in model.layers)

"""Probing tasks of the importance-ranking experiment (METRICS.md "Importance ranking", paper sec. 7).

The separation is s3prl's: features once, probes many.

* :func:`load_probe_utterances` -- a corpus' utterances as :class:`ProbeUtterance` (waveform at the
  model's rate, phone segments, speaker), loaded once and reused for every pruning point;
* :func:`extract_probe_features` -- one pass of the (refined, frozen) model over them: the last
  layer's valid frames, frame phone labels at the model's frame rate, speakers, and the
  reconstruction L1 sums of the model's own pre-training head; refinement (pruned heads, spans)
  goes through :func:`satkern.patch` only;
* the four probes, each ``(train_features, test_features, ...) -> float`` on the test split:
  :func:`reconstruction_l1` (test split only), :func:`phone_probe` (frame-level phone accuracy,
  one-hidden-layer MLP), :func:`speaker_frame_probe` (frame-level speaker accuracy, the same MLP),
  :func:`speaker_utterance_probe` (mean pooling over valid frames, then one linear layer).

A task that cannot run on the given data raises :class:`TaskSkipped` with the reason (no phone
alignments, no speakers, no test speaker seen in training, no pre-training head).

Frame phone labels (documented choice): the histogram rule of :func:`satkern.corpus.frame_label_weights`
(frame ``k`` covers samples ``[k*S, (k+1)*S)``, row = fraction of those samples in each phone),
then the label with the largest share (``argmax``; ties go to the label that sorts first). A frame
with no labelled sample gets label ``-1`` and takes no part in training or scoring.

Determinism: the probes draw their initial weights and mini-batches from a ``torch.Generator``
seeded with ``seed`` (the global RNG is left alone), features are standardized with the training
split's mean and standard deviation, and training runs a fixed number of Adam steps, so a probe
gives the same value on every call (bitwise on CPU for a fixed thread count).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence

import torch
from torch import nn

from ..patching import Observer

# Probe training defaults (fixed: every point of a curve trains its probes the same way).
PROBE_STEPS = 300  # Adam steps per probe
PROBE_HIDDEN = 128  # hidden units of the frame-level MLP
PROBE_BATCH = 512  # frames per mini-batch (frame probes); the utterance probe is full-batch
PROBE_LR = 1e-3  # Adam learning rate
STD_FLOOR = 1e-6  # standardization: a feature with smaller spread is only centred


class TaskSkipped(ValueError):
    """A probing task that cannot run on the given data; ``str(e)`` says why."""


@dataclass
class ProbeUtterance:
    """One utterance ready for the model: ``waveform`` float32 ``[N]`` at the model's rate,
    ``segments`` (phone segments in samples at that rate) or ``None``, ``speaker`` or ``None``."""

    uid: str
    waveform: torch.Tensor
    speaker: Optional[str] = None
    segments: Optional[list] = None

    @property
    def num_samples(self) -> int:
        return int(self.waveform.numel())


@dataclass
class ProbeFeatures:
    """What one pass of the model over a split gives the probes.

    * ``frames[i]``: float32 ``[T_i, F]``, the last layer's valid frames of utterance ``i``;
    * ``phones[i]``: int64 ``[T_i]`` frame phone labels (``-1``: no labelled sample), or ``None``
      when the utterances have no alignments; ``labels``: the phone names of the label indices;
    * ``speakers``: one per utterance, or ``None`` when any utterance has no speaker;
    * ``recon_abs_sum`` / ``recon_count``: sum of abs(head output - input features) and the
      number of (valid frame, feature dimension) pairs, or ``None`` without a pre-training head;
    * ``audio_seconds``, ``forward_seconds`` (waveform -> last layer, wall clock), ``attention_seconds``
      (of it, inside the attention layers' satkern calls);
    * ``metrics``: :class:`satkern.HeadMetrics` ``[U, L, H]`` when statistics were asked for.
    """

    uids: List[str]
    frames: List[torch.Tensor]
    phones: Optional[List[torch.Tensor]] = None
    labels: Optional[List[str]] = None
    speakers: Optional[List[str]] = None
    recon_abs_sum: Optional[float] = None
    recon_count: int = 0
    audio_seconds: float = 0.0
    forward_seconds: float = 0.0
    attention_seconds: float = 0.0
    metrics: Optional[object] = None
    lengths: Optional[torch.Tensor] = None
    notes: List[str] = field(default_factory=list)

    @property
    def forward_s_per_audio_s(self) -> float:
        return self.forward_seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")

    @property
    def attention_share(self) -> float:
        return self.attention_seconds / self.forward_seconds if self.forward_seconds > 0 else float("nan")


# ----------------------------------------------------------------------------------- data
def frame_phone_labels(segments, num_samples: int, frame_stride: int, num_frames: int,
                       label_index: Mapping[str, int]) -> torch.Tensor:
    """Frame phone labels int64 ``[num_frames]``: the majority label of each model frame under the
    histogram rule (:func:`satkern.corpus.frame_label_weights`), ``-1`` for a frame without any
    labelled sample. Ties go to the smaller label index."""
    from ..corpus.framing import frame_label_weights

    W = frame_label_weights(segments, num_samples, frame_stride, num_frames, label_index)
    if W.shape[1] == 0:
        return torch.full((num_frames,), -1, dtype=torch.int64)
    labels = W.argmax(dim=1)  # first maximum: ties to the smaller index
    return torch.where(W.sum(1) > 0, labels, torch.full_like(labels, -1))


def load_probe_utterances(utterances, target_rate: int, *, with_alignments: bool = True, label_map=None,
                          tier: Optional[str] = None, allow_resample: bool = True):
    """Load :class:`satkern.corpus.Utterance` s (audio, alignments, speakers) as :class:`ProbeUtterance` s.

    Returns ``(loaded, skipped)``; ``skipped`` lists ``{"utterance", "path", "reason"}`` for files that
    could not be read (never raises for one bad file).
    """
    from ..corpus.batching import BatchDataset

    ds = BatchDataset([list(utterances)], target_rate, with_alignments=with_alignments, tier=tier,
                      label_map=label_map, allow_resample=allow_resample)
    loaded, skipped = [], []
    for u in utterances:
        item = ds.load(u)
        if item.waveform is None:
            skipped.append({"utterance": u.uid, "path": item.path, "reason": item.error})
            continue
        loaded.append(ProbeUtterance(u.uid, item.waveform, u.speaker, item.segments))
    return loaded, skipped


def _batches(lengths: Sequence[int], budget_samples: int) -> List[List[int]]:
    from ..corpus.batching import length_buckets

    return length_buckets(list(lengths), max(int(budget_samples), 1))


def _spec_head_of(speech_model, spec_head):
    if spec_head is not None:
        return spec_head
    return getattr(speech_model.model, "spec_head", None)


def extract_probe_features(speech_model, utterances: Sequence[ProbeUtterance], *, patch_kwargs: Optional[dict] = None,
                           device="cpu", label_index: Optional[Mapping[str, int]] = None, spec_head=None,
                           batch_seconds: float = 40.0, input_cache: Optional[dict] = None,
                           layer_cache: Optional[dict] = None) -> ProbeFeatures:
    """Run the frozen model, refined through :func:`satkern.patch` (``patch_kwargs``: ``prune=``,
    ``span=``, ``span_mode=``, ``stats=``, ``backend=``), over ``utterances`` and collect what the
    probes need.

    Args:
        speech_model: a :class:`satkern.models.SpeechModel`.
        utterances: :class:`ProbeUtterance` s (see :func:`load_probe_utterances`).
        patch_kwargs: passed to :func:`satkern.patch` (default: no refinement, no statistics).
        label_index: phone label -> index for the frame phone labels (``None``: labels are collected
            from the utterances' segments, sorted).
        spec_head: the pre-training head (``last hidden [B, T, hidden] -> ([B, T, F*R], ...)``) for the
            reconstruction L1; default ``speech_model.model.spec_head`` if the model has one.
        batch_seconds: padded audio seconds per batch (batching never changes results).
        input_cache: a dict (empty at first) kept between calls over the same utterances: the model
            inputs of each batch (``SpeechModel.prepare``: features, padding) are computed once.
        layer_cache: likewise, for s3prl models: the hidden states entering each layer. The input of
            layer ``l`` does not depend on a refinement of layers ``l`` and later, so a call whose
            first refined layer is ``l0`` stores the inputs of layers ``0..l0`` it has not stored yet,
            and a later call starts at its first refined layer from the stored input when there is one
            (``forward_seconds`` then times only the layers that ran).
    """
    import satkern

    kwargs = dict(patch_kwargs or {})
    kwargs.setdefault("stats", ())
    rate = int(speech_model.sample_rate)
    if not utterances:
        raise ValueError("extract_probe_features: no utterances")
    has_phones = all(u.segments for u in utterances)
    if has_phones and label_index is None:
        label_index = {l: i for i, l in enumerate(sorted({s.label for u in utterances for s in u.segments}))}
    has_speakers = all(u.speaker for u in utterances)
    head = _spec_head_of(speech_model, spec_head)
    model = speech_model.model
    dev = torch.device(device)
    model.to(dev).eval()
    if head is not None:
        head.to(dev).eval()

    n = len(utterances)
    frames: List[Optional[torch.Tensor]] = [None] * n
    phones: List[Optional[torch.Tensor]] = [None] * n
    lengths = torch.zeros(n, dtype=torch.int64)
    abs_sum, count = 0.0, 0
    fwd_s = 0.0
    order = []
    timer = AttentionTimer()
    h = satkern.patch(speech_model, observers=[timer], **kwargs)
    cached = layer_cache is not None and speech_model.supports_layer_cache and not h.metric_names
    if cached:
        first_refined = _first_refined_layer(h)
    metric_parts = []
    try:
        for batch in _batches([u.num_samples for u in utterances], int(batch_seconds * rate)):
            key = tuple(batch)
            with torch.inference_mode():
                if input_cache is not None and key in input_cache:
                    inputs, frame_lengths = input_cache[key]
                else:
                    inputs, frame_lengths = speech_model.prepare([utterances[i].waveform.to(dev) for i in batch])
                    if input_cache is not None:
                        input_cache[key] = (inputs, frame_lengths)
                t0 = time.perf_counter()
                if cached:
                    hidden = speech_model.forward_cached(inputs, frame_lengths, first_refined,
                                                         layer_cache.setdefault(key, {}))
                else:
                    out = speech_model(inputs)
                    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                fwd_s += time.perf_counter() - t0
                target = speech_model.reconstruction_target(inputs) if head is not None else None
                if target is not None:  # a head, and a family that defines what it reconstructs
                    pred = head(hidden)
                    pred = pred[0] if isinstance(pred, (tuple, list)) else pred
                    T = min(pred.shape[1], target.shape[1])
                    valid = (torch.arange(T, device=dev)[None, :] < frame_lengths.to(dev)[:, None])
                    diff = (pred[:, :T].double() - target[:, :T].double()).abs().sum(-1)  # [B, T]
                    abs_sum += float(diff[valid].sum())
                    count += int(valid.sum()) * int(pred.shape[-1])
            for j, i in enumerate(batch):
                T = int(frame_lengths[j])
                frames[i] = hidden[j, :T].detach().to("cpu", torch.float32).clone()
                lengths[i] = T
                if has_phones:
                    u = utterances[i]
                    phones[i] = frame_phone_labels(u.segments, u.num_samples, speech_model.frame_stride, T,
                                                   label_index)
            order.extend(batch)
            if h.metric_names:
                metric_parts.append((list(batch), h.metrics))
                h.reset()
    finally:
        h.remove()
    attn_s = timer.seconds
    metrics = None
    if metric_parts:
        from ..metrics import HeadMetrics

        metrics = HeadMetrics()
        for w in h.metric_names:
            first = getattr(metric_parts[0][1], w)
            full = torch.full((n,) + tuple(first.shape[1:]), float("nan"), dtype=first.dtype)
            for idx, m in metric_parts:
                full[idx] = getattr(m, w)
            setattr(metrics, w, full)
    notes = []
    if head is None:
        notes.append("reconstruction: the model has no pre-training head (s3prl SpecHead)")
    return ProbeFeatures(
        uids=[u.uid for u in utterances], frames=frames, phones=phones if has_phones else None,
        labels=(sorted(label_index, key=label_index.get) if has_phones else None),
        speakers=[u.speaker for u in utterances] if has_speakers else None,
        recon_abs_sum=abs_sum if head is not None else None, recon_count=count,
        audio_seconds=sum(u.num_samples for u in utterances) / rate, forward_seconds=fwd_s,
        attention_seconds=attn_s, metrics=metrics, lengths=lengths, notes=notes)


def _first_refined_layer(h) -> int:
    """The first layer a patch changes (pruned heads or a span), or ``num_layers`` if none."""
    return next((l for l in range(h.num_layers) if h.refines(l)), h.num_layers)


class AttentionTimer(Observer):
    """Observer of a patch: ``seconds`` spent inside the layers' attention calls (the satkern op and the
    patch's refinement: padded rows, head gates), wall clock, summed over every call since it was made.
    Added last, its ``before`` / ``after`` pair encloses the op alone (see :mod:`satkern.patching.observers`)."""

    def __init__(self):
        self.seconds = 0.0
        self._start = None

    def before(self, call) -> None:
        self._start = time.perf_counter()

    def after(self, call) -> None:
        self.seconds += time.perf_counter() - self._start


# ----------------------------------------------------------------------------------- probes
def reconstruction_l1(test: ProbeFeatures, train: Optional[ProbeFeatures] = None) -> float:
    """Mean abs(head output - input features) over every valid frame and feature dimension of the
    test split (pooled over utterances). ``train`` is not used (no probe is trained)."""
    if test.recon_abs_sum is None:
        raise TaskSkipped("reconstruction: the model has no pre-training head (s3prl SpecHead)")
    if test.recon_count == 0:
        raise TaskSkipped("reconstruction: the test split has no valid frames")
    return test.recon_abs_sum / test.recon_count


def _standardizer(x: torch.Tensor):
    x64 = x.double()
    mean = x64.mean(0)
    std = x64.std(0, unbiased=False)
    std = torch.where(std > STD_FLOOR, std, torch.ones_like(std))
    return lambda z: ((z.double() - mean) / std).float()


class single_thread:
    """Run torch on one intra-op thread inside the block (then restore the count).

    The probes' matrices are small: on this project's 2-core VM a 512 x 32 -> 128 -> 41 MLP step took
    7 ms on one thread and 100-300 ms on two while other processes kept the cores busy (OpenMP
    threads waiting on each other). One thread also makes the probes' results independent of the
    machine's thread count."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _train_classifier(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch: Optional[int],
                      lr: float, gen: torch.Generator) -> nn.Module:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    N = x.shape[0]
    net.train()
    with single_thread():
        _steps(net, opt, loss_fn, x, y, N, steps, batch, gen)
    net.eval()
    return net


def _steps(net, opt, loss_fn, x, y, N, steps, batch, gen):
    for _ in range(int(steps)):
        if batch is not None and batch < N:
            idx = torch.randint(0, N, (batch,), generator=gen)
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x, y
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()


def _make_net(in_dim: int, num_classes: int, hidden: Optional[int], seed: int) -> nn.Module:
    # initial weights from a local seed, leaving the global RNG state as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if hidden is None:
            return nn.Linear(in_dim, num_classes)
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def _check_steps(steps, name):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{name}: steps must be a positive int; got {steps!r}")


def frame_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                num_classes: int, seed: int = 0, steps: int = PROBE_STEPS, hidden: int = PROBE_HIDDEN,
                batch: int = PROBE_BATCH, lr: float = PROBE_LR) -> float:
    """Accuracy on ``test`` of a one-hidden-layer ReLU MLP trained on standardized ``train`` frames."""
    net, norm = train_frame_probe(train_x, train_y, num_classes=num_classes, seed=seed, steps=steps, hidden=hidden,
                                  batch=batch, lr=lr)
    with torch.no_grad(), single_thread():
        pred = net(norm(test_x)).argmax(-1)
    return float((pred == test_y).double().mean())


def train_frame_probe(train_x: torch.Tensor, train_y: torch.Tensor, *, num_classes: int, seed: int = 0,
                      steps: int = PROBE_STEPS, hidden: int = PROBE_HIDDEN, batch: int = PROBE_BATCH,
                      lr: float = PROBE_LR):
    """``(net, standardize)``: the trained frame-level MLP and the train split's standardization
    (``net(standardize(x))`` gives the logits)."""
    _check_steps(steps, "frame_probe")
    norm = _standardizer(train_x)
    gen = torch.Generator().manual_seed(int(seed))
    net = _make_net(train_x.shape[1], num_classes, hidden, seed)
    with torch.enable_grad():
        _train_classifier(net, norm(train_x), train_y, steps=steps, batch=batch, lr=lr, gen=gen)
    return net, norm


def _labelled_frames(feats: ProbeFeatures):
    x = torch.cat(feats.frames) if feats.frames else torch.zeros(0, 0)
    y = torch.cat(feats.phones)
    keep = y >= 0
    return x[keep], y[keep]


def phone_probe(train: ProbeFeatures, test: ProbeFeatures, *, seed: int = 0, steps: int = PROBE_STEPS,
                hidden: int = PROBE_HIDDEN, batch: int = PROBE_BATCH, lr: float = PROBE_LR) -> float:
    """Frame-level phone accuracy on the test split (METRICS.md probe 2): a one-hidden-layer MLP on the
    last layer's frames, trained on the train split. Frames without a label take no part."""
    if train.phones is None or test.phones is None:
        raise TaskSkipped("phone: the corpus has no phone alignments")
    if train.labels != test.labels:
        raise ValueError("phone_probe: train and test features use different phone label sets; pass the same "
                         "label_index to extract_probe_features")
    xtr, ytr = _labelled_frames(train)
    xte, yte = _labelled_frames(test)
    if xtr.shape[0] == 0 or xte.shape[0] == 0:
        raise TaskSkipped("phone: no labelled frames in the train or test split")
    return frame_probe(xtr, ytr, xte, yte, num_classes=len(train.labels), seed=seed, steps=steps, hidden=hidden,
                       batch=batch, lr=lr)


def _speaker_targets(train: ProbeFeatures, test: ProbeFeatures, task: str):
    if train.speakers is None or test.speakers is None:
        raise TaskSkipped(f"{task}: the corpus gives no speaker for some utterances (layout without speaker "
                          f"folders, or a manifest without a speaker column)")
    speakers = sorted(set(train.speakers))
    if len(speakers) < 2:
        raise TaskSkipped(f"{task}: the train split has {len(speakers)} speaker(s); classification needs 2 or more")
    index = {s: i for i, s in enumerate(speakers)}
    seen = [i for i, s in enumerate(test.speakers) if s in index]
    if not seen:
        raise TaskSkipped(f"{task}: no test speaker appears in the train split (closed-set speaker "
                          f"classification needs every test speaker in training)")
    return index, seen


def speaker_frame_probe(train: ProbeFeatures, test: ProbeFeatures, *, seed: int = 0, steps: int = PROBE_STEPS,
                        hidden: int = PROBE_HIDDEN, batch: int = PROBE_BATCH, lr: float = PROBE_LR) -> float:
    """Frame-level speaker accuracy on the test split (METRICS.md probe 3): the phone probe's MLP with
    speakers as classes. Test utterances of speakers absent from the train split are left out."""
    index, seen = _speaker_targets(train, test, "speaker-frame")
    xtr = torch.cat(train.frames)
    ytr = torch.cat([torch.full((f.shape[0],), index[s], dtype=torch.int64)
                     for f, s in zip(train.frames, train.speakers)])
    xte = torch.cat([test.frames[i] for i in seen])
    yte = torch.cat([torch.full((test.frames[i].shape[0],), index[test.speakers[i]], dtype=torch.int64)
                     for i in seen])
    if xtr.shape[0] == 0 or xte.shape[0] == 0:
        raise TaskSkipped("speaker-frame: no frames in the train or test split")
    return frame_probe(xtr, ytr, xte, yte, num_classes=len(index), seed=seed, steps=steps, hidden=hidden,
                       batch=batch, lr=lr)


def mean_pool(frames: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[U, F]``: each utterance's mean over its valid frames (an utterance without frames gives 0)."""
    return torch.stack([f.double().mean(0).float() if f.shape[0] else f.new_zeros(f.shape[1]) for f in frames])


def speaker_utterance_probe(train: ProbeFeatures, test: ProbeFeatures, *, seed: int = 0, steps: int = PROBE_STEPS,
                            lr: float = PROBE_LR * 10) -> float:
    """Utterance-level speaker accuracy on the test split (METRICS.md probe 4): mean pooling over valid
    frames, then one linear layer, trained full-batch. Test utterances of unseen speakers are left out."""
    _check_steps(steps, "speaker_utterance_probe")
    index, seen = _speaker_targets(train, test, "speaker-utterance")
    xtr = mean_pool(train.frames)
    ytr = torch.tensor([index[s] for s in train.speakers], dtype=torch.int64)
    xte = mean_pool([test.frames[i] for i in seen])
    yte = torch.tensor([index[test.speakers[i]] for i in seen], dtype=torch.int64)
    norm = _standardizer(xtr)
    gen = torch.Generator().manual_seed(int(seed))
    net = _make_net(xtr.shape[1], len(index), None, seed)
    with torch.enable_grad():
        _train_classifier(net, norm(xtr), ytr, steps=steps, batch=None, lr=lr, gen=gen)
    with torch.no_grad(), single_thread():
        pred = net(norm(xte)).argmax(-1)
    return float((pred == yte).double().mean())


#: task name -> probe function ``(train, test, seed=..., steps=...) -> float``
TASKS = {
    "reconstruction": lambda train, test, seed=0, steps=PROBE_STEPS: reconstruction_l1(test, train),
    "phone": phone_probe,
    "speaker-frame": speaker_frame_probe,
    "speaker-utterance": speaker_utterance_probe,
}


def run_task(task: str, train: ProbeFeatures, test: ProbeFeatures, *, seed: int = 0, steps: int = PROBE_STEPS) -> float:
    """One task by name (:data:`TASKS`); raises :class:`TaskSkipped` when it cannot run on this data."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return TASKS[task](train, test, seed=seed, steps=steps)


__all__ = ["TaskSkipped", "ProbeUtterance", "ProbeFeatures", "frame_phone_labels", "load_probe_utterances",
           "extract_probe_features", "reconstruction_l1", "frame_probe", "train_frame_probe", "phone_probe", "speaker_frame_probe",
           "speaker_utterance_probe", "mean_pool", "TASKS", "run_task", "PROBE_STEPS", "PROBE_HIDDEN",
           "PROBE_BATCH", "PROBE_LR"]

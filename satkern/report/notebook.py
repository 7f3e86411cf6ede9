"""``satkern.show``: the head explorer in a notebook (Jupyter, VS Code, Colab), offline, nothing to install.

``satkern.show(run_folder)`` shows the ``head_maps.npz`` of a ``satkern analyze --head-maps N`` run;
``satkern.show(model, waveforms)`` captures every head's map of the given waveforms itself (the same
capture as the run: :func:`satkern.analysis.head_maps.capture_head_maps`). Either way the result's
``_repr_html_`` is the report's explorer (:mod:`.explorer`) as a whole page in an ``<iframe srcdoc>``:
its own Content-Security-Policy, no request, no style or id shared with the notebook.
"""
from __future__ import annotations

import html as _html
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..analysis.head_maps import (MAX_BINS, METRIC_NAMES, HeadMaps, capture_head_maps, empty_head_maps,
                                  load_head_maps, stored_utterance)
from . import explorer


class HeadExplorer:
    """What :func:`show` returns: ``head_maps`` (:class:`~satkern.analysis.HeadMaps`, numpy arrays),
    ``html`` (the explorer as a whole offline page), ``save(path)``, and ``_repr_html_`` for notebooks."""

    def __init__(self, head_maps: HeadMaps, title: str, height: int = 940):
        self.head_maps = head_maps
        self.title = title
        self.height = int(height)
        self.html = explorer.page(head_maps, title=title)

    def save(self, path) -> Path:
        """Write the page (one self-contained HTML file) to ``path``."""
        path = Path(path)
        path.write_text(self.html, encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        return (f'<iframe class="sk-explorer-frame" title="{_html.escape(self.title)}" srcdoc="{_html.escape(self.html)}" '
                f'style="width:100%;min-width:1100px;height:{self.height}px;border:1px solid #ddd"></iframe>')

    def __repr__(self) -> str:
        hm = self.head_maps
        return (f"HeadExplorer({hm.model_name}: {hm.layers} layers x {hm.heads} heads, "
                f"{len(hm.utterances)} utterance(s): {', '.join(u.uid for u in hm.utterances)})")


def _as_waveform(w):
    import torch

    t = torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w, dtype=torch.float32)
    if t.dim() != 1:
        raise ValueError(f"satkern.show: each waveform must be 1-D (samples at the model's rate); got shape "
                         f"{tuple(t.shape)}")
    return t


def capture(model, waveforms: Sequence, *, names: Optional[Sequence[str]] = None,
            phones: Optional[Sequence[Optional[Sequence[Tuple[float, float, str]]]]] = None,
            max_bins: int = MAX_BINS, backend: str = "auto") -> HeadMaps:
    """Every head's map of ``waveforms`` (1-D, at ``model.sample_rate``) through ``model`` (a
    :class:`satkern.models.SpeechModel` or a name / path for :func:`satkern.models.load_model`), as
    :class:`HeadMaps`; categories and "corpus" values are those of these waveforms' mean G, V, D."""
    import torch

    from .. import categorize

    if isinstance(model, (str, Path)):
        from ..models import load_model

        model = load_model(str(model))
    if isinstance(waveforms, (np.ndarray, torch.Tensor)) and np.ndim(waveforms) == 1:
        waveforms = [waveforms]
    waves = [_as_waveform(w) for w in waveforms]
    if not waves:
        raise ValueError("satkern.show: no waveform given")
    names = list(names) if names is not None else [f"utterance {i}" for i in range(len(waves))]
    phones = list(phones) if phones is not None else [None] * len(waves)
    if len(names) != len(waves) or len(phones) != len(waves):
        raise ValueError(f"satkern.show: {len(waves)} waveforms but {len(names)} names and {len(phones)} phone lists")
    rate = int(model.sample_rate)
    caps = [capture_head_maps(model, w, max_bins=max_bins, backend=backend) for w in waves]
    mean = {k: np.mean([c.metrics[k] for c in caps], axis=0) for k in METRIC_NAMES}
    L, H = mean["G"].shape
    cats = categorize(torch.from_numpy(mean["G"]), torch.from_numpy(mean["V"]), torch.from_numpy(mean["D"]))
    hm = empty_head_maps(model, model_spec=str(getattr(model, "name", "")), weights_checksum="",
                         category=np.asarray(cats, dtype=str).reshape(L, H), corpus=mean, max_bins=max_bins)
    for name, w, c, ph in zip(names, waves, caps, phones):
        hm.utterances.append(stored_utterance(str(name), c, w, rate, list(ph or [])))
    return hm


def show(source: Union[str, Path, HeadMaps, object], waveforms: Optional[Sequence] = None, *,
         names: Optional[Sequence[str]] = None, phones=None, max_bins: int = MAX_BINS, backend: str = "auto",
         title: Optional[str] = None, height: int = 940) -> HeadExplorer:
    """The head explorer of a run folder (or its ``head_maps.npz``, or a :class:`HeadMaps`), or of
    ``waveforms`` through a model.

    ``satkern.show("runs/analyze")`` -- a ``satkern analyze --head-maps N`` folder;
    ``satkern.show(model, [wave, ...], names=[...], phones=[[(start_s, end_s, label), ...], ...])`` --
    ``model`` a :class:`satkern.models.SpeechModel` or a name for ``load_model``, waveforms 1-D at the
    model's sample rate, phones optional. Returns a :class:`HeadExplorer` (displays itself in a notebook).
    """
    if waveforms is None:
        if isinstance(source, HeadMaps):
            hm = source
        elif isinstance(source, (str, Path)):
            hm = load_head_maps(source)
        else:
            raise TypeError("satkern.show: give a run folder (or head_maps.npz), or a model and waveforms")
    else:
        hm = capture(source, waveforms, names=names, phones=phones, max_bins=max_bins, backend=backend)
    if not hm.utterances:
        raise ValueError("satkern.show: the head maps hold no utterance")
    return HeadExplorer(hm, title or f"satkern head explorer: {hm.model_name}", height=height)

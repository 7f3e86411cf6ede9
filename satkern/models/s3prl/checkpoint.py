"""Loading s3prl checkpoints (Mockingjay / TERA / AudioALBERT) safely.

An s3prl checkpoint is a ``torch.save``-d dict. The keys satkern reads:

* ``Transformer``: the state dict of s3prl's ``TransformerModel``;
* ``SpecHead``: the reconstruction head (not part of the model here; noted only);
* the upstream config (a dict with a ``transformer`` block, ``mockingjay`` in the
  oldest ones, and an ``audio`` block for on-the-fly features) under ``Config``
  (legacy), ``Upstream_Config`` (current), or ``Settings["Config"]`` (the first
  Mockingjay runner).

Beside tensors and plain containers such files pickle a few objects:
``argparse.Namespace`` (the command-line arguments, ``Args`` / ``Settings["Paras"]``)
and, inside the optimizer state of BertAdam / Lamb, the learning-rate *schedule*
objects of ``s3prl/optimizers.py`` (``WarmupLinearSchedule`` and friends; module
``optimizers`` in old checkpoints, ``s3prl.optimizers`` in newer ones).

Loading is safe by default: ``torch.load(weights_only=True)`` with an explicit
allow-list, :data:`ALLOWED_GLOBALS`:

* ``argparse.Namespace``: unpickling creates an empty namespace and fills its
  ``__dict__``; it has no ``__setstate__``/``__reduce__`` hooks, so nothing runs;
* the six s3prl schedule classes, mapped to inert local stand-ins
  (:class:`LRScheduleRecord` subclasses of the same names) that only hold the pickled
  attributes (``warmup``, ``t_total``, ...); s3prl itself is never imported.

Any other pickled class or function is refused with :class:`UntrustedCheckpointError`
naming it, unless ``trust=True`` (then the file is unpickled with full pickle, which can
run arbitrary code: only for files from a source you trust; the schedule classes still
map to the stand-ins, so an s3prl install is not needed).
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import types
from typing import Any, Dict, List, Optional, Tuple

import torch

from .features import S3prlFeatures
from .model import S3prlConfig, S3prlTransformer


class UntrustedCheckpointError(pickle.UnpicklingError):
    """The checkpoint pickles classes or functions outside satkern's allow-list."""

    def __init__(self, path: str, names: List[str], detail: str = ""):
        self.path = path
        self.names = list(names)
        shown = ", ".join(self.names) if self.names else "(unknown: " + detail + ")"
        super().__init__(
            f"satkern: refusing to load s3prl checkpoint {path!r}: it pickles {shown}, which is not on "
            f"satkern's allow-list (argparse.Namespace and s3prl's learning-rate schedules). Unpickling it "
            f"could run code. If you trust where the file comes from, load it with trust=True "
            f"(load_s3prl_checkpoint(path, trust=True), or load_model(path, trust_checkpoint=True)).")


# ----------------------------------------------------------------------------------
# the allow-list
# ----------------------------------------------------------------------------------
class LRScheduleRecord:
    """Inert stand-in for a pickled s3prl learning-rate schedule: holds its attributes, does nothing."""

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"{type(self).__name__}({attrs})"


class ConstantLR(LRScheduleRecord):
    pass


class WarmupCosineSchedule(LRScheduleRecord):
    pass


class WarmupCosineWithHardRestartsSchedule(LRScheduleRecord):
    pass


class WarmupCosineWithWarmupRestartsSchedule(LRScheduleRecord):
    pass


class WarmupConstantSchedule(LRScheduleRecord):
    pass


class WarmupLinearSchedule(LRScheduleRecord):
    pass


SCHEDULE_RECORDS = (ConstantLR, WarmupCosineSchedule, WarmupCosineWithHardRestartsSchedule,
                    WarmupCosineWithWarmupRestartsSchedule, WarmupConstantSchedule, WarmupLinearSchedule)
# where s3prl's optimizers.py lived: the top-level module `optimizers` (old checkpoints; s3prl's
# builder aliases sys.modules["optimizers"] to load them) and `s3prl.optimizers` (packaged s3prl)
SCHEDULE_MODULES = ("optimizers", "s3prl.optimizers")

#: pickled name -> the object unpickling produces
ALLOWED_GLOBALS: Dict[str, Any] = {"argparse.Namespace": argparse.Namespace}
for _mod in SCHEDULE_MODULES:
    for _cls in SCHEDULE_RECORDS:
        ALLOWED_GLOBALS[f"{_mod}.{_cls.__name__}"] = _cls


def _safe_globals_list():
    return [(obj, name) for name, obj in ALLOWED_GLOBALS.items()]


# full pickle for trust=True, with the schedule names still mapped to the stand-ins
class _TrustedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        obj = ALLOWED_GLOBALS.get(f"{module}.{name}")
        if obj is not None:
            return obj
        return super().find_class(module, name)


def _trusted_load(f, **kw):
    return _TrustedUnpickler(f, **kw).load()


_trusted_pickle = types.ModuleType("satkern_trusted_pickle")
_trusted_pickle.Unpickler = _TrustedUnpickler
_trusted_pickle.load = _trusted_load
_trusted_pickle.__dict__.update({k: getattr(pickle, k) for k in ("UnpicklingError", "HIGHEST_PROTOCOL")})

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")


def read_checkpoint(path, trust: bool = False, map_location="cpu") -> Dict[str, Any]:
    """The raw checkpoint dict, unpickled safely (see the module docstring) unless ``trust``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"s3prl checkpoint not found: {path!r}")
    if trust:
        return torch.load(path, map_location=map_location, weights_only=False, pickle_module=_trusted_pickle)
    with torch.serialization.safe_globals(_safe_globals_list()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            msg = str(e)
            try:
                names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            except Exception:  # legacy (non-zip) files cannot be scanned statically
                names = []
            if not names:
                names = _GLOBAL_RE.findall(msg)
            raise UntrustedCheckpointError(path, names, detail=msg.splitlines()[0] if msg else "") from e


# ----------------------------------------------------------------------------------
# reading the config and state dict
# ----------------------------------------------------------------------------------
def _transformer_block(cfg: Any) -> Optional[Dict[str, Any]]:
    if isinstance(cfg, dict):
        for key in ("transformer", "mockingjay"):
            if isinstance(cfg.get(key), dict):
                return cfg[key]
    return None


def find_upstream_config(states: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
    """``(upstream config, where it was)``: the first of ``Config``, ``Upstream_Config``,
    ``Settings["Config"]`` holding a ``transformer`` (or legacy ``mockingjay``) block."""
    for key in ("Config", "Upstream_Config"):
        if _transformer_block(states.get(key)) is not None:
            return states[key], key
    settings = states.get("Settings")
    if isinstance(settings, dict) and _transformer_block(settings.get("Config")) is not None:
        return settings["Config"], "Settings.Config"
    raise ValueError("s3prl checkpoint: no upstream config with a 'transformer' block under 'Config', "
                     f"'Upstream_Config' or 'Settings'; top-level keys are {sorted(map(str, states))}")


def _rename_legacy_keys(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """TF-style LayerNorm names ``gamma``/``beta`` -> ``weight``/``bias`` (as s3prl's loader does)."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[-1] == "gamma":
            parts[-1] = "weight"
        elif parts[-1] == "beta":
            parts[-1] = "bias"
        out[".".join(parts)] = v
    return out


def model_from_states(states: Dict[str, Any], name: str = "s3prl", source: str = "",
                      audio_config: Optional[Dict[str, Any]] = None) -> S3prlTransformer:
    """Build the model a checkpoint dict describes and load its ``Transformer`` weights strictly.

    ``audio_config`` (an s3prl ``audio`` block) replaces the checkpoint's own, as s3prl's
    ``on_the_fly_config``; use it for checkpoints trained on pre-extracted features."""
    if not isinstance(states, dict) or "Transformer" not in states:
        keys = sorted(map(str, states)) if isinstance(states, dict) else type(states).__name__
        raise ValueError(f"s3prl checkpoint {source!r}: no 'Transformer' state dict (found {keys})")
    cfg, where = find_upstream_config(states)
    block = _transformer_block(cfg)
    sd = _rename_legacy_keys(dict(states["Transformer"]))
    w = sd.get("input_representations.spec_transform.weight")
    if w is None:
        raise ValueError(f"s3prl checkpoint {source!r}: 'Transformer' has no input_representations.spec_transform "
                         "(checkpoints without the input module are not supported)")
    dr = int(block.get("downsample_rate", 1) or 1)
    if w.shape[1] % dr:
        raise ValueError(f"s3prl checkpoint {source!r}: spec_transform takes {w.shape[1]} inputs, not a multiple "
                         f"of downsample_rate {dr}")
    input_dim = w.shape[1] // dr
    features = None
    audio = audio_config if audio_config is not None else cfg.get("audio")
    if isinstance(audio, dict) and audio:
        features = S3prlFeatures.from_audio_config(audio)
        if features.dim != input_dim:
            raise ValueError(f"s3prl checkpoint {source!r}: its audio config gives {features.dim}-dim features but "
                             f"spec_transform expects {input_dim} x downsample_rate {dr}")
    config = S3prlConfig.from_block(block, input_dim=input_dim, downsample_rate=dr)
    model = S3prlTransformer(config, features=features, name=name)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"s3prl checkpoint {source!r}: 'Transformer' does not match the model built from its "
                         f"config ({where}): missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                         f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    task = cfg.get("task") if isinstance(cfg.get("task"), dict) else {}
    try:
        model.sequence_length = max(int(task.get("sequence_length", 0) or 0), 0)
    except (TypeError, ValueError):
        raise ValueError(f"s3prl checkpoint {source!r}: task.sequence_length must be an integer; got "
                         f"{task.get('sequence_length')!r}") from None
    model.eval()
    model.random_weights = False
    model.checkpoint_info = {
        "path": source,
        "config_key": where,
        "step": states.get("Step", states.get("Global_step")),
        "has_spec_head": "SpecHead" in states,
        "keys": sorted(map(str, states)),
    }
    return model


def load_s3prl_checkpoint(path, trust: bool = False, map_location="cpu",
                          audio_config: Optional[Dict[str, Any]] = None) -> S3prlTransformer:
    """Load an s3prl Mockingjay / TERA / AudioALBERT checkpoint as an eval-mode :class:`S3prlTransformer`.

    Safe by default (``torch.load(weights_only=True)`` with the allow-list described in this
    module); a file that pickles anything else raises :class:`UntrustedCheckpointError` naming
    it, unless ``trust=True``. The ``Transformer`` weights load strictly. ``audio_config``: an
    s3prl ``audio`` block to use instead of the checkpoint's (needed for ``extract_features``
    when the checkpoint was trained on pre-extracted features and has none).
    """
    path = os.fspath(path)
    states = read_checkpoint(path, trust=trust, map_location=map_location)
    name = os.path.splitext(os.path.basename(path))[0]
    return model_from_states(states, name=name, source=path, audio_config=audio_config)

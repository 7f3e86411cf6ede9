"""The adapter API: how a kind of model is taught to :func:`satkern.patch`.

An adapter is an :class:`Adapter` with two methods and a description; ``satkern.patch`` asks every
adapter (:func:`satkern.patching.adapters`; built in: :mod:`.hf`, :mod:`.s3prl`; more with
:func:`satkern.patching.register_adapter`) for the modules it patches, orders them all by model order,
builds one :class:`~satkern.Patch` over them, then lets each adapter install itself:

1. ``find(model) -> [(qualified name, module), ...]``: the self-attention modules it patches, one entry
   per layer position (a module shared by several layers is listed at each, and must carry a
   ``layer_index`` attribute that its encoder sets before each call). Touches nothing.
2. ``install(patch, model, found)``: reroute each found module's attention core to
   ``owner(module).run(module, q, k, v, lengths=..., scale=..., bias=...)`` (``q, k, v [B, H, T, D]``;
   ``lengths`` from a padding mask by ``patch.lengths_from_mask(mask, B, T)``), and make every change
   through the patch so that ``patch.remove()`` undoes it exactly:

   * ``patch.set_instance_attr(obj, name, value)``: set an instance attribute (the former instance
     attribute comes back on removal, or none, so the class attribute shows again);
   * ``patch.on_remove(fn)``: any other change, with the function that undoes it (run last first).

   A model that runs utterances in chunks tells the patch (``patch.begin_chunks`` /
   ``patch.end_chunks``, see :meth:`satkern.Patch.begin_chunks`).
3. ``description``: what it patches, for the error message when no adapter finds anything.

If ``install`` raises, ``satkern.patch`` removes the patch (undoing what was installed so far).
"""
from __future__ import annotations

from typing import List, Tuple

from torch import nn


class Adapter:
    """Base class of model adapters (see the module docstring)."""

    description: str = ""

    def find(self, model: nn.Module) -> List[Tuple[str, nn.Module]]:
        raise NotImplementedError

    def install(self, patch, model: nn.Module, found: List[Tuple[str, nn.Module]]) -> None:
        raise NotImplementedError


__all__ = ["Adapter"]

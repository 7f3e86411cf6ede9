"""Hugging Face transformers adapter: a ``"satkern"`` attention implementation plus WavLM.

Families that route their attention core through ``transformers.AttentionInterface``
(wav2vec2, HuBERT, data2vec-audio, UniSpeech, UniSpeech-SAT, SEW, wav2vec2-conformer,
the whisper encoder) are patched by switching their configs' ``_attn_implementation``
to ``"satkern"``: :func:`satkern_attention` is registered with ``AttentionInterface`` and
:func:`satkern_mask` with ``AttentionMaskInterface`` (without a mask function the
padding mask silently becomes ``None``). The mask function hands the plain 2-d padding
mask through for bidirectional self-attention; the attention function turns it into
lengths. WavLM computes its gated relative-position bias inside the module and calls
torch's ``multi_head_attention_forward``; its attention modules get an instance-level
``forward`` that reproduces the module's score computation with satkern.

Every family is one row of :data:`FAMILIES`; nothing below is per-family code except
WavLM's forward (the one family whose scores are not q k^T + mask).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from .adapter import Adapter
from .core import Patch, owner

IMPLEMENTATION = "satkern"


@dataclass(frozen=True)
class HFFamily:
    """How one transformers model family is patched.

    * ``model_type``: the config's ``model_type``.
    * ``attention_class``: class name of its self-attention module.
    * ``route``: ``"interface"`` (AttentionInterface) or ``"module"`` (instance forward).
    * ``suffix`` / ``exclude``: the module's qualified name must end with ``suffix`` and not
      contain ``exclude`` (whisper: only the encoder's ``self_attn``), or ``""`` for any.
    """

    model_type: str
    attention_class: str
    route: str = "interface"
    suffix: str = ""
    exclude: str = ""


FAMILIES: Tuple[HFFamily, ...] = (
    HFFamily("wav2vec2", "Wav2Vec2Attention"),
    HFFamily("hubert", "HubertAttention"),
    HFFamily("data2vec-audio", "Data2VecAudioAttention"),
    HFFamily("unispeech", "UniSpeechAttention"),
    HFFamily("unispeech-sat", "UniSpeechSatAttention"),
    HFFamily("sew", "SEWAttention"),
    HFFamily("wav2vec2-conformer", "Wav2Vec2ConformerSelfAttention"),
    HFFamily("whisper", "WhisperAttention", suffix="self_attn", exclude="decoder"),
    HFFamily("wavlm", "WavLMAttention", route="module"),
)
_BY_CLASS: Dict[str, HFFamily] = {f.attention_class: f for f in FAMILIES}


# ---------------------------------------------------------------------- registration
def satkern_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                 mask_function: Optional[Callable] = None, attention_mask: Optional[torch.Tensor] = None,
                 **kwargs):
    """Mask function registered as ``"satkern"`` in ``AttentionMaskInterface``.

    Bidirectional self-attention (the encoders satkern patches): returns the 2-d bool
    padding mask ``[B, T]`` (True = valid frame), or ``None`` without padding. Any other
    pattern (causal decoder masks of a whole whisper model): the sdpa boolean mask, for
    the unpatched modules that fall back to sdpa.
    """
    from transformers.masking_utils import bidirectional_mask_function, prepare_padding_mask, sdpa_mask

    if (mask_function is bidirectional_mask_function and q_length == kv_length
            and not q_offset and not kv_offset):
        if attention_mask is None:
            return None
        return prepare_padding_mask(attention_mask, kv_length, kv_offset).to(torch.bool)
    if mask_function is None:
        mask_function = bidirectional_mask_function
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask, **kwargs)


def _fallback(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Modules the patch does not own (e.g. a whisper decoder) run torch sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
        attention_mask = attention_mask[:, None, None, :]
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                  **kwargs)


def _refuse_training_dropout(module: nn.Module, dropout: float) -> None:
    if module.training and dropout and dropout > 0:
        # every patched transformers family reads its attention dropout from config.attention_dropout
        raise RuntimeError(f"satkern: {type(module).__name__} is in training mode with attention dropout "
                           f"{dropout} (config field 'attention_dropout'); satkern does not implement attention "
                           f"dropout. Set config.attention_dropout = 0 before building the model to train it "
                           f"patched, or call model.eval().")


def satkern_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: Optional[torch.Tensor], scaling: Optional[float] = None,
                      dropout: float = 0.0, **kwargs):
    """Attention function registered as ``"satkern"`` in ``transformers.AttentionInterface``.

    ``query``/``key``/``value`` ``[B, H, T, D]``; ``attention_mask`` from :func:`satkern_mask`
    (2-d padding mask, or ``None``) or any prefix mask :func:`lengths_from_mask` accepts;
    ``scaling`` the score scale (whisper pre-scales its query and passes 1.0);
    ``position_bias`` (wav2vec2-conformer relative positions) the additive score bias.
    Returns ``(out [B, T, H, D], None)``.
    """
    patch = owner(module)
    if patch is None or query.shape[2] != key.shape[2]:
        return _fallback(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    _refuse_training_dropout(module, dropout)
    B, H, T, D = query.shape
    lengths = patch.lengths_from_mask(attention_mask, B, T)  # cached per mask: checked once per forward
    bias = kwargs.get("position_bias")
    out = patch.run(module, query, key, value, lengths=lengths, scale=scaling, bias=bias)
    return out.transpose(1, 2).contiguous(), None


@functools.lru_cache(maxsize=None)
def register() -> None:
    """Register ``"satkern"`` with transformers' attention and mask interfaces (once)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, satkern_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, satkern_mask)


# ---------------------------------------------------------------------- WavLM
def _wavlm_forward(module: nn.Module, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                   position_bias: Optional[torch.Tensor] = None, index: int = 0, **kwargs):
    """WavLMAttention.forward with satkern as the attention core.

    Reproduces transformers' modeling_wavlm score computation: the (ungated) relative
    position bias from the first layer's bucket embedding, gated per head and frame by
    ``gru_rel_pos_linear`` / ``gru_rel_pos_const``; scores ``(q * scaling) k^T + gated bias``
    with key padding from the 2-d ``attention_mask`` (1 = valid). The per-head gated bias
    goes to satkern as ``bias``, so each head's statistics describe its own map (HF returns
    head-averaged weights).
    """
    patch = owner(module)
    _refuse_training_dropout(module, module.dropout)
    bsz, tgt_len, _ = hidden_states.size()
    H = module.num_heads
    if position_bias is None:
        position_bias = module.compute_bias(tgt_len, tgt_len)
        position_bias = position_bias.unsqueeze(0).repeat(bsz, 1, 1, 1).view(bsz * H, tgt_len, tgt_len)

    gated_hidden_states = hidden_states.view(hidden_states.shape[:-1] + (H, -1)).permute(0, 2, 1, 3)
    relative_position_proj = module.gru_rel_pos_linear(gated_hidden_states)
    relative_position_proj = relative_position_proj.view(gated_hidden_states.shape[:-1] + (2, 4)).sum(-1)
    gate_a, gate_b = torch.sigmoid(relative_position_proj).chunk(2, dim=-1)
    gate_output = gate_a * (gate_b * module.gru_rel_pos_const - 1.0) + 2.0  # constants as in WavLM
    gated_position_bias = (gate_output.view(bsz * H, -1, 1) * position_bias).view(bsz, H, tgt_len, tgt_len)

    D = module.head_dim
    q = module.q_proj(hidden_states).view(bsz, tgt_len, H, D).transpose(1, 2)
    k = module.k_proj(hidden_states).view(bsz, tgt_len, H, D).transpose(1, 2)
    v = module.v_proj(hidden_states).view(bsz, tgt_len, H, D).transpose(1, 2)
    lengths = None
    if attention_mask is not None:
        # WavLM masks keys where attention_mask != 1 (key_padding_mask = attention_mask.ne(1))
        lengths = patch.lengths_from_mask(attention_mask, bsz, tgt_len, valid_value=1)
    out = patch.run(module, q, k, v, lengths=lengths, scale=module.scaling, bias=gated_position_bias)
    out = module.out_proj(out.transpose(1, 2).reshape(bsz, tgt_len, module.embed_dim))
    return out, None, position_bias


# ---------------------------------------------------------------------- discovery / install
def find_modules(model: nn.Module) -> List[Tuple[str, nn.Module, HFFamily]]:
    """The patchable HF self-attention modules of ``model``, in model order."""
    found = []
    for name, m in model.named_modules():
        fam = _BY_CLASS.get(type(m).__name__)
        if fam is None or not name.endswith(fam.suffix) or (fam.exclude and fam.exclude in name):
            continue
        if getattr(m, "is_causal", False) or getattr(m, "is_decoder", False):
            continue  # decoder self-attention: not what satkern analyses
        found.append((name, m, fam))
    return found


def _configs_of(model: nn.Module) -> List:
    """Every distinct transformers config object reachable from the model's modules (and sub-configs)."""
    seen: Dict[int, object] = {}

    def visit(cfg):
        if cfg is None or id(cfg) in seen or not hasattr(cfg, "_attn_implementation_internal"):
            return
        seen[id(cfg)] = cfg
        for key in getattr(cfg, "sub_configs", {}) or {}:
            visit(getattr(cfg, key, None))

    for m in model.modules():
        visit(getattr(m, "config", None))
    return list(seen.values())


def install(patch: Patch, model: nn.Module, found: List[Tuple[str, nn.Module, HFFamily]]) -> None:
    """Reroute the found modules to ``patch``; every change is undone by ``patch.remove()``."""
    if any(f.route == "interface" for _, _, f in found):
        register()
        configs = _configs_of(model)
        saved = [(cfg, cfg._attn_implementation_internal) for cfg in configs]

        def restore_configs():
            for cfg, value in saved:
                cfg._attn_implementation_internal = value  # the exact former value, sub-configs included

        patch.on_remove(restore_configs)
        for cfg in configs:
            cfg._attn_implementation_internal = IMPLEMENTATION
    for _, m, fam in found:
        if fam.route != "module":
            continue
        patch.set_instance_attr(m, "forward", functools.partial(_wavlm_forward, m))


class HFAdapter(Adapter):
    """The transformers families of :data:`FAMILIES`."""

    description = f"Hugging Face {', '.join(f.model_type for f in FAMILIES)}"

    def find(self, model: nn.Module) -> List[Tuple[str, nn.Module]]:
        return [(name, m) for name, m, _ in find_modules(model)]

    def install(self, patch: Patch, model: nn.Module, found: List[Tuple[str, nn.Module]]) -> None:
        install(patch, model, [(name, m, _BY_CLASS[type(m).__name__]) for name, m in found])


ADAPTER = HFAdapter()

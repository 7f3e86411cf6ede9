"""The Mockingjay / TERA / AudioALBERT transformer of s3prl, in satkern.

Layer layout and parameter names follow s3prl's ``upstream/mockingjay/model.py``
(``TransformerModel``), so the ``Transformer`` state dict of an s3prl checkpoint
loads strictly::

    input_representations.spec_transform     Linear(input_dim * downsample_rate -> hidden)
    input_representations.LayerNorm          TF-style LayerNorm (eps inside the sqrt)
    encoder.layer.{i}.attention.self.{query,key,value}
    encoder.layer.{i}.attention.output.{dense,LayerNorm}
    encoder.layer.{i}.attention.LayerNorm    pre-LN only: alias of attention.output.LayerNorm
    encoder.layer.{i}.intermediate.dense
    encoder.layer.{i}.output.{dense,LayerNorm}
    encoder.layer.{i}.LayerNorm              pre-LN only: alias of output.LayerNorm
    encoder.LayerNorm.{0..L}                 pre-LN only: one per hidden state

``share_layer`` (AudioALBERT): s3prl puts the same layer module at every position; here
each position gets its own module whose parameters are the very Parameter objects of
layer 0, so the weights are shared exactly and the state dict has s3prl's keys (every
index, the same tensors), while each layer's attention module is distinct (one
module per layer for the patcher).

Forward, as s3prl's ``PretrainedTransformer`` runs it: stack ``downsample_rate``
consecutive feature frames into one (dropping the frames left over at the end of the
padded batch), add the sinusoidal position table to ``spec_transform(x)``, LayerNorm,
dropout, then the layers. The padding mask is s3prl's additive ``-10000`` on padded
keys (not ``-inf``); padded query rows are computed like any other row and carry no
meaning. Post-LN layers (the default) or pre-LN layers (``pre_layer_norm``).
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

# s3prl's padding bias: (1 - mask) * -10000.0 added to the scaled scores.
S3PRL_MASK_VALUE = -10000.0


# ----------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------
def _to_bool(v) -> bool:
    if isinstance(v, str):
        if v.strip().lower() in ("true", "1", "yes"):
            return True
        if v.strip().lower() in ("false", "0", "no", "none", ""):
            return False
        raise ValueError(f"not a boolean: {v!r}")
    return bool(v)


@dataclass
class S3prlConfig:
    """The ``transformer`` block of an s3prl config (``mockingjay`` in the oldest ones), plus
    ``input_dim``: feature dimension *before* frame stacking."""

    hidden_size: int = 768
    num_hidden_layers: int = 3
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    share_layer: bool = False
    pre_layer_norm: bool = False
    downsample_rate: int = 1
    input_dim: int = 80

    _TYPES = {"hidden_size": int, "num_hidden_layers": int, "num_attention_heads": int, "intermediate_size": int,
              "hidden_act": str, "hidden_dropout_prob": float, "attention_probs_dropout_prob": float,
              "initializer_range": float, "layer_norm_eps": float, "share_layer": _to_bool,
              "pre_layer_norm": _to_bool, "downsample_rate": int, "input_dim": int}

    @classmethod
    def from_block(cls, block: Dict[str, Any], **overrides) -> "S3prlConfig":
        """From a config block (extra keys such as mask settings are ignored; YAML strings
        like ``"1e-12"`` are converted); ``overrides`` win over the block."""
        merged = {k: v for k, v in dict(block).items() if k in cls._TYPES}
        unknown = [k for k in overrides if k not in cls._TYPES]
        if unknown:
            raise TypeError(f"s3prl config: unknown option(s) {unknown}; known: {sorted(cls._TYPES)}")
        merged.update(overrides)
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
                   if k not in merged]
        if missing:
            raise ValueError(f"s3prl config: the transformer block lacks {missing}")
        if "downsample_rate" in merged and merged["downsample_rate"] in (None, "None"):
            merged["downsample_rate"] = 1
        cfg = cls(**{k: cls._TYPES[k](v) for k, v in merged.items()})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"s3prl config: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.downsample_rate < 1:
            raise ValueError(f"s3prl config: downsample_rate must be >= 1; got {self.downsample_rate}")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"s3prl config: hidden_act must be one of {sorted(ACT2FN)}; got {self.hidden_act!r}")
        if self.input_dim < 1 or self.num_hidden_layers < 1:
            raise ValueError("s3prl config: input_dim and num_hidden_layers must be >= 1")

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ----------------------------------------------------------------------------------
# building blocks (s3prl's formulas, term for term)
# ----------------------------------------------------------------------------------
def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, written as s3prl writes it."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


ACT2FN = {"gelu": gelu, "relu": torch.nn.functional.relu, "swish": swish}


def _sinusoid(seq_len, hidden_size: int) -> torch.Tensor:
    """The table computed from ``torch.arange(seq_len)`` (``seq_len`` may be symbolic under torch.compile)."""
    pos = torch.arange(seq_len, dtype=torch.float64)[:, None]
    i = torch.arange(hidden_size, dtype=torch.float64)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2.0 * torch.div(i, 2, rounding_mode="floor")
                            / hidden_size)
    even = (torch.arange(hidden_size) % 2 == 0)[None, :]
    return torch.where(even, torch.sin(angle), torch.cos(angle)).to(torch.float32)  # sin on 2i, cos on 2i+1


@functools.lru_cache(maxsize=16)
def _sinusoid_table(seq_len: int, hidden_size: int) -> torch.Tensor:
    return _sinusoid(seq_len, hidden_size)


def position_encoding(seq_len: int, hidden_size: int) -> torch.Tensor:
    """s3prl's sinusoidal table ``[seq_len, hidden_size]`` (float64 angles, stored as float32):
    ``pos / 10000^(2 (i // 2) / hidden)``, sin on even dims, cos on odd dims.

    Eager: from a cache of tables rounded up to a power of two. Under ``torch.compile`` the table is
    computed in the graph from the length, so a compiled model (``dynamic=True``, ``fullgraph=True``
    too) serves every batch length with one compile; the cache's Python-side sizing had specialized
    it on every length (8 recompiles, then eager)."""
    if torch.compiler.is_compiling():
        return _sinusoid(seq_len, hidden_size)
    # round the cache key up so growing batches reuse tables
    n = max(64, 1 << max(0, int(seq_len - 1).bit_length()))
    return _sinusoid_table(n, hidden_size)[:seq_len]


def padding_bias(lengths: torch.Tensor, T: int, dtype: torch.dtype) -> torch.Tensor:
    """s3prl's additive key mask ``[B, 1, 1, T]``: 0 for valid keys, -10000 for padded keys."""
    valid = torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]
    mask = valid.to(dtype)
    return ((1.0 - mask) * S3PRL_MASK_VALUE)[:, None, None, :]


def stack_frames(feats: torch.Tensor, rate: int) -> torch.Tensor:
    """s3prl's ``down_sample_frames``: drop the ``T % rate`` trailing frames of the padded batch,
    then concatenate each ``rate`` consecutive frames: ``[B, T, F] -> [B, T // rate, F * rate]``."""
    if rate == 1:
        return feats
    B, T, Fdim = feats.shape
    left = T % rate
    if left:
        feats = feats[:, : T - left]
    return feats.reshape(B, (T - left) // rate, Fdim * rate)


def stacked_lengths(lengths: torch.Tensor, T: int, rate: int) -> torch.Tensor:
    """Model frames per utterance after :func:`stack_frames` of a batch padded to ``T`` feature
    frames: a stacked frame is valid when it holds at least one valid feature frame (s3prl counts
    the stacked frames that are not all zero), i.e. ``min(ceil(len / rate), T // rate)``."""
    if rate == 1:
        return lengths.clamp(max=T)
    return torch.minimum(torch.div(lengths + rate - 1, rate, rounding_mode="floor"),
                         torch.full_like(lengths, T // rate))


# ----------------------------------------------------------------------------------
# modules (attribute names = s3prl's, so state dicts match)
# ----------------------------------------------------------------------------------
class S3prlLayerNorm(nn.Module):
    """TF-style LayerNorm (epsilon inside the square root), parameters ``weight``/``bias``."""

    def __init__(self, hidden_size: int, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.variance_epsilon)
        return self.weight * x + self.bias


class S3prlInputRepresentations(nn.Module):
    def __init__(self, config: S3prlConfig):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.spec_transform = nn.Linear(config.input_dim * config.downsample_rate, config.hidden_size)
        self.LayerNorm = S3prlLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, spec: torch.Tensor, pos_enc: torch.Tensor) -> torch.Tensor:
        x = self.spec_transform(spec) + pos_enc
        return self.dropout(self.LayerNorm(x))


class S3prlSelfAttention(nn.Module):
    """Multi-head self-attention of s3prl's transformer.

    Projects to ``q, k, v [B, H, T, D]`` and calls :meth:`attend`, the one place the
    attention itself is computed; the satkern patcher replaces ``attend`` per instance
    (an instance attribute, deleted again on removal). Every layer has its own instance,
    also with ``share_layer`` (the instances then hold the same Parameter objects);
    ``layer_index`` is set by the encoder before each call.
    """

    def __init__(self, config: S3prlConfig):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        # s3prl divides the scores by sqrt(D); satkern's kernels multiply by this scale
        self.scaling = 1.0 / math.sqrt(self.attention_head_size)
        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.layer_index = 0

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_attention_heads, self.attention_head_size).permute(0, 2, 1, 3)

    def attention_probs(self, q: torch.Tensor, k: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The eager attention map ``[B, H, T, T]``: softmax of ``q k^T / sqrt(D)`` plus the
        additive padding bias (no dropout)."""
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        scores = scores + padding_bias(lengths, q.shape[-2], scores.dtype)
        return torch.softmax(scores, dim=-1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Eager attention: ``q, k, v [B, H, T, D]``, ``lengths`` int64 ``[B]`` (valid frames) ->
        context ``[B, H, T, D]``. Dropout on the map in training mode, as s3prl."""
        return torch.matmul(self.dropout(self.attention_probs(q, k, lengths)), v)

    def forward(self, hidden_states: torch.Tensor, lengths: torch.Tensor, output_attentions: bool = False,
                head_mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        q = self._heads(self.query(hidden_states))
        k = self._heads(self.key(hidden_states))
        v = self._heads(self.value(hidden_states))
        probs = None
        if output_attentions and "attend" not in self.__dict__:
            probs = self.attention_probs(q, k, lengths)
            context = torch.matmul(self.dropout(probs), v)
        else:
            context = self.attend(q, k, v, lengths)
            if output_attentions:  # attend is patched: still return the eager map
                probs = self.attention_probs(q, k, lengths)
        if head_mask is not None:
            # s3prl multiplies the map by the head mask; (A m) V = (A V) m per head
            context = context * head_mask.to(context.dtype).view(-1, self.num_attention_heads, 1, 1)
        B, H, T, D = context.shape
        context = context.permute(0, 2, 1, 3).reshape(B, T, H * D)
        return context, probs


class S3prlResidualOutput(nn.Module):
    """dense -> dropout -> + residual -> LayerNorm (post-LN only): s3prl's SelfOutput and Output blocks."""

    def __init__(self, config: S3prlConfig, in_features: int):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.LayerNorm = S3prlLayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.dense(hidden_states)) + input_tensor
        if not self.pre_layer_norm:
            hidden_states = self.LayerNorm(hidden_states)
        return hidden_states


class S3prlAttention(nn.Module):
    def __init__(self, config: S3prlConfig):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        self.self = S3prlSelfAttention(config)
        self.output = S3prlResidualOutput(config, config.hidden_size)
        if self.pre_layer_norm:
            self.LayerNorm = self.output.LayerNorm  # s3prl's alias: the pre-attention LayerNorm

    def forward(self, input_tensor, lengths, output_attentions=False, head_mask=None):
        x = self.LayerNorm(input_tensor) if self.pre_layer_norm else input_tensor
        context, probs = self.self(x, lengths, output_attentions, head_mask)
        return self.output(context, input_tensor), probs


class S3prlIntermediate(nn.Module):
    def __init__(self, config: S3prlConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class S3prlLayer(nn.Module):
    def __init__(self, config: S3prlConfig):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        self.attention = S3prlAttention(config)
        self.intermediate = S3prlIntermediate(config)
        self.output = S3prlResidualOutput(config, config.intermediate_size)
        if self.pre_layer_norm:
            self.LayerNorm = self.output.LayerNorm  # s3prl's alias: the pre-FFN LayerNorm

    def forward(self, hidden_states, lengths, output_attentions=False, head_mask=None):
        attention_output, probs = self.attention(hidden_states, lengths, output_attentions, head_mask)
        x = self.LayerNorm(attention_output) if self.pre_layer_norm else attention_output
        return self.output(self.intermediate(x), attention_output), probs


def _share_parameters(src: nn.Module, dst: nn.Module) -> None:
    """Make every parameter of ``dst`` the same Parameter object as in ``src`` (same structure)."""
    for ms, md in zip(src.modules(), dst.modules()):
        if type(ms) is not type(md):
            raise RuntimeError("s3prl share_layer: layer structures differ")
        for name, p in ms._parameters.items():
            md._parameters[name] = p


class S3prlEncoder(nn.Module):
    def __init__(self, config: S3prlConfig):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        layer = S3prlLayer(config)
        layers = [copy.deepcopy(layer) for _ in range(config.num_hidden_layers)]
        if config.share_layer:
            # ALBERT: s3prl repeats one layer module; here each position has its own module
            # (so each attention module is one layer, for patching) holding the *same*
            # Parameter objects as layer 0: the weights are shared exactly as in s3prl, and
            # the state dict has the same keys (every index, same tensors).
            for other in layers[1:]:
                _share_parameters(layers[0], other)
        self.layer = nn.ModuleList(layers)
        if self.pre_layer_norm:
            # pre-LN: a LayerNorm on every hidden state handed out (inputs of each layer, final output)
            self.LayerNorm = nn.ModuleList([S3prlLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                                            for _ in range(config.num_hidden_layers + 1)])

    def forward(self, hidden_states, lengths, output_attentions=False, head_mask=None):
        all_hidden: List[torch.Tensor] = []
        all_attn: List[torch.Tensor] = []
        for i, layer in enumerate(self.layer):
            layer.attention.self.layer_index = i  # informational: which layer is running
            all_hidden.append(self.LayerNorm[i](hidden_states) if self.pre_layer_norm else hidden_states)
            hm = None if head_mask is None else head_mask[i]
            hidden_states, probs = layer(hidden_states, lengths, output_attentions, hm)
            if output_attentions:
                all_attn.append(probs)
        all_hidden.append(self.LayerNorm[-1](hidden_states) if self.pre_layer_norm else hidden_states)
        return all_hidden, all_attn


@dataclass
class S3prlModelOutput:
    """``last_hidden_state [B, T', hidden]``; ``hidden_states``: the L+1 representations s3prl
    hands out (input representation, then each layer; LayerNorm-ed for pre-LN models);
    ``attentions``: per-layer maps ``[B, H, T', T']`` when asked for; ``lengths``: model frames."""

    last_hidden_state: torch.Tensor
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    lengths: Optional[torch.Tensor] = None

    def __getitem__(self, i):
        return (self.last_hidden_state, self.hidden_states, self.attentions)[i]


class S3prlTransformer(nn.Module):
    """s3prl's ``TransformerModel`` (Mockingjay / TERA / AudioALBERT) with feature extraction.

    Attributes besides the modules: ``config`` (:class:`S3prlConfig`), ``features``
    (:class:`~satkern.models.s3prl.features.S3prlFeatures` or ``None`` for checkpoints
    trained on pre-extracted features), ``sample_rate``, ``frame_stride`` (samples per
    model frame = feature hop x downsample rate), ``name``.
    """

    def __init__(self, config: S3prlConfig, features=None, name: str = "s3prl"):
        super().__init__()
        config.validate()
        self.config = config
        self.features = features
        self.name = name
        self.input_representations = S3prlInputRepresentations(config)
        self.encoder = S3prlEncoder(config)
        # s3prl's ``task.sequence_length`` (feature frames; 0: no limit): its upstream splits a longer
        # input into torch.chunk pieces of at most this length and runs each on its own (see forward)
        self.sequence_length = 0
        self.whole_sequence = False  # True: ignore sequence_length and run every input at once
        self.chunk_listener = None  # set by satkern.patch: told which calls are chunks of which utterance
        self.apply(self._init_weights)
        if features is not None and features.dim != config.input_dim:
            raise ValueError(f"s3prl model: features have dimension {features.dim} but the model expects "
                             f"input_dim {config.input_dim}")

    def _init_weights(self, module: nn.Module) -> None:
        """s3prl's initialization: Linear weights N(0, initializer_range), biases 0, LayerNorm 1/0."""
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, S3prlLayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    # -- framing ------------------------------------------------------------------
    @property
    def downsample_rate(self) -> int:
        return self.config.downsample_rate

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate if self.features is not None else 16000

    @property
    def frame_stride(self) -> int:
        """Samples per model frame: the feature hop times the downsample rate."""
        hop = self.features.hop_length if self.features is not None else 160
        return hop * self.config.downsample_rate

    def num_frames(self, num_samples: int) -> int:
        """Model frames of an utterance of ``num_samples`` samples run on its own (a batch of one:
        the feature frames left over after stacking are dropped, in each chunk when chunked)."""
        if self.features is None:
            raise RuntimeError("s3prl model has no feature config (trained on pre-extracted features)")
        dr = self.config.downsample_rate
        return sum(size // dr for size in self.chunk_sizes(self.features.num_frames(int(num_samples))))

    # -- s3prl's sequence_length chunking --------------------------------------------
    @property
    def chunking(self) -> bool:
        """Whether inputs longer than :attr:`sequence_length` are split into chunks (s3prl's default)."""
        return self.sequence_length > 0 and not self.whole_sequence

    def chunk_sizes(self, num_feature_frames: int) -> List[int]:
        """Feature frames of each chunk s3prl's upstream runs for an input of this many frames alone:
        ``torch.chunk(x, ceil(T / sequence_length))`` when ``T > sequence_length`` (chunks of
        ``ceil(T / n)`` frames, the last one shorter), else the whole input."""
        n = int(num_feature_frames)
        L = self.sequence_length
        if not self.chunking or n <= L:
            return [n]
        size = math.ceil(n / math.ceil(n / L))  # torch.chunk's chunk size
        return [min(size, n - start) for start in range(0, n, size)]

    def chunk_pieces(self, num_feature_frames: int) -> List[Tuple[int, int, int]]:
        """``(first feature frame, feature frames used, model frames)`` of each chunk of an input of
        this many feature frames (chunks too short for one stacked frame are left out, unless the
        input has no other)."""
        dr = self.config.downsample_rate
        pieces, start = [], 0
        for size in self.chunk_sizes(num_feature_frames):
            pieces.append((start, size // dr * dr, size // dr))
            start += size
        return [p for p in pieces if p[2] > 0] or pieces[:1]

    def model_lengths(self, feature_lengths: torch.Tensor, T: int) -> torch.Tensor:
        """Model frames per utterance of a batch padded to ``T`` feature frames."""
        lengths = torch.as_tensor(feature_lengths, dtype=torch.int64)
        whole = stacked_lengths(lengths, int(T), self.config.downsample_rate)
        if not self.chunking:
            return whole
        dr = self.config.downsample_rate
        chunked = [sum(c // dr for c in self.chunk_sizes(n)) if n > self.sequence_length else int(w)
                   for n, w in zip(lengths.tolist(), whole.tolist())]
        return torch.tensor(chunked, dtype=torch.int64)

    def extract_features(self, waveforms) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(feats [B, T, F] zero-padded, lengths [B] feature frames)`` for 1-d waveforms at
        :attr:`sample_rate`, as the checkpoint's feature config prescribes."""
        if self.features is None:
            raise RuntimeError(f"s3prl model {self.name!r} has no feature config (its checkpoint was trained "
                               "on pre-extracted features); pass features to forward() directly")
        feats, lengths = self.features(waveforms)
        p = next(self.parameters())
        return feats.to(device=p.device, dtype=p.dtype), lengths.to(p.device)

    # -- forward ------------------------------------------------------------------
    def forward(self, feats: torch.Tensor, lengths: Optional[torch.Tensor] = None, output_attentions: bool = False,
                output_hidden_states: bool = False, head_mask: Optional[torch.Tensor] = None) -> S3prlModelOutput:
        """Run the transformer on features.

        Args:
            feats: ``[B, T, input_dim]`` features (``[T, input_dim]`` for one utterance),
                zero-padded past each utterance's length.
            lengths: int ``[B]`` valid feature frames; ``None`` means every frame is valid.
            output_attentions: also return each layer's map ``[B, H, T', T']``.
            output_hidden_states: also return the L+1 hidden states.
            head_mask: ``[H]`` or ``[L, H]`` multipliers of the heads' maps (1 keeps a head).

        ``T' = T // downsample_rate``; ``out.lengths`` holds the model frames per utterance.

        s3prl's ``sequence_length`` (:attr:`sequence_length`, from the checkpoint's ``task``
        block): unless :attr:`whole_sequence`, an utterance longer than that many feature
        frames is run as s3prl's upstream runs it alone: split with ``torch.chunk`` into
        ``ceil(T / sequence_length)`` pieces, each run on its own (its own padding mask, frame
        stacking and position encodings from 0), the results concatenated along time. The maps
        (``output_attentions``) are then block-diagonal, one block per chunk. Each utterance is
        chunked by its own length, so a padded batch gives what each utterance gives alone.
        """
        if feats.dim() == 2:
            feats = feats.unsqueeze(0)
        if feats.dim() != 3 or feats.shape[-1] != self.config.input_dim:
            raise ValueError(f"s3prl model: feats must be [B, T, {self.config.input_dim}]; got {tuple(feats.shape)}")
        B, T, _ = feats.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.int64, device=feats.device)
        lengths = torch.as_tensor(lengths, device=feats.device).to(torch.int64)
        if lengths.shape != (B,):
            raise ValueError(f"s3prl model: lengths must have shape [{B}]; got {tuple(lengths.shape)}")
        if self.chunking and bool((lengths > self.sequence_length).any()):
            return self._forward_chunks(feats, lengths, output_attentions, output_hidden_states, head_mask)
        return self._forward_whole(feats, lengths, output_attentions, output_hidden_states, head_mask)

    def _forward_whole(self, feats, lengths, output_attentions, output_hidden_states, head_mask) -> S3prlModelOutput:
        B, T, _ = feats.shape
        dr = self.config.downsample_rate
        x = stack_frames(feats, dr)
        Tm = x.shape[1]
        model_lengths = stacked_lengths(lengths, T, dr)
        pos = position_encoding(Tm, self.config.hidden_size).to(device=x.device, dtype=x.dtype)
        hidden = self.input_representations(x, pos)
        if head_mask is not None:
            head_mask = torch.as_tensor(head_mask, device=x.device)
            if head_mask.dim() == 1:
                head_mask = head_mask[None, :].expand(self.num_layers, -1)
        all_hidden, all_attn = self.encoder(hidden, model_lengths, output_attentions, head_mask)
        return S3prlModelOutput(last_hidden_state=all_hidden[-1],
                                hidden_states=tuple(all_hidden) if output_hidden_states else None,
                                attentions=tuple(all_attn) if output_attentions else None,
                                lengths=model_lengths)

    def chunk_slots(self, lengths) -> Tuple[List[Tuple[List[int], List[int], List[int]]], List[List[Tuple[int, int, int]]],
                                            List[int]]:
        """How a batch of utterances of ``lengths`` feature frames runs chunked: ``(slots, pieces, total)``.

        ``pieces[u]``: :meth:`chunk_pieces` of utterance ``u``; slot ``j`` = ``(utterances, output
        frame offsets, model frames)`` of the j-th chunks of all utterances that have one (they run
        as one padded batch); ``total[u]``: model frames of utterance ``u``, its chunks concatenated."""
        pieces = [self.chunk_pieces(n) for n in torch.as_tensor(lengths).tolist()]
        total = [sum(p[2] for p in ps) for ps in pieces]
        slots = []
        for j in range(max((len(ps) for ps in pieces), default=0)):
            idx = [u for u in range(len(pieces)) if len(pieces[u]) > j]
            offsets = [sum(p[2] for p in pieces[u][:j]) for u in idx]
            slots.append((idx, offsets, [pieces[u][j][2] for u in idx]))
        return slots, pieces, total

    @staticmethod
    def chunk_batch(feats: torch.Tensor, pieces, j: int, idx: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x [b_j, T_j, F], kept [b_j])``: the j-th chunk of each utterance in ``idx``, trimmed to whole
        stacked frames (as when the chunk runs alone), zero-padded to the longest."""
        kept = [pieces[u][j][1] for u in idx]
        x = feats.new_zeros(len(idx), max(kept), feats.shape[-1])
        for i, u in enumerate(idx):
            start = pieces[u][j][0]
            x[i, :kept[i]] = feats[u, start:start + kept[i]]
        return x, torch.tensor(kept, device=feats.device)

    def announce_chunks(self, batch: int, slots) -> None:
        """Tell :attr:`chunk_listener` (set by satkern.patch) which layer calls are which chunks."""
        if self.chunk_listener is not None:
            self.chunk_listener.begin_chunks(batch, [(torch.tensor(i), torch.tensor(o), torch.tensor(f))
                                                     for i, o, f in slots])

    def end_announced_chunks(self) -> None:
        if self.chunk_listener is not None:
            self.chunk_listener.end_chunks()

    def _forward_chunks(self, feats, lengths, output_attentions, output_hidden_states, head_mask) -> S3prlModelOutput:
        """Every utterance split into its s3prl chunks (:meth:`chunk_sizes`); the j-th chunks of all
        utterances that have one run as one padded batch ("slot" j, :meth:`chunk_slots`), each chunk
        trimmed to whole stacked frames as when it runs alone; outputs scattered back and concatenated
        per utterance."""
        B = feats.shape[0]
        slots, pieces, total = self.chunk_slots(lengths)
        T_out = max(total) if total else 0
        hidden = self.config.hidden_size
        n_states = self.num_layers + 1
        states = [feats.new_zeros(B, T_out, hidden) for _ in range(n_states if output_hidden_states else 1)]
        maps = ([feats.new_zeros(B, self.num_heads, T_out, T_out) for _ in range(self.num_layers)]
                if output_attentions else None)
        self.announce_chunks(B, slots)
        try:
            for j, (idx, offsets, frames) in enumerate(slots):
                x, kept = self.chunk_batch(feats, pieces, j, idx)
                out = self._forward_whole(x, kept, output_attentions, output_hidden_states, head_mask)
                chunk_states = out.hidden_states if output_hidden_states else (out.last_hidden_state,)
                for i, u in enumerate(idx):
                    o, n = offsets[i], frames[i]
                    for dst, src in zip(states, chunk_states):
                        dst[u, o:o + n] = src[i, :n]
                    if maps is not None:
                        for dst, src in zip(maps, out.attentions):
                            dst[u, :, o:o + n, o:o + n] = src[i, :, :n, :n]
        finally:
            self.end_announced_chunks()
        return S3prlModelOutput(last_hidden_state=states[-1],
                                hidden_states=tuple(states) if output_hidden_states else None,
                                attentions=tuple(maps) if output_attentions else None,
                                lengths=torch.tensor(total, dtype=torch.int64, device=feats.device))

    def attention_modules(self) -> List[S3prlSelfAttention]:
        """The self-attention module of each layer, in layer order (distinct modules, also with
        ``share_layer``, whose parameters are then shared)."""
        return [layer.attention.self for layer in self.encoder.layer]

"""Typed configuration of the fastattn Transformer family.

One config describes an encoder, a decoder-only LM or an encoder-decoder: a stack is
present when it has layers. Each layer names its attention pattern (full, causal, sliding
window, global+local, hierarchical); causality follows from the stack (decoders are
causal, encoders bidirectional; a ``causal`` layer is causal in an encoder too), and
grouped-query attention from ``kv_heads``. :func:`parse_patterns` reads the command
line's ``--attention`` (one pattern for every layer, or one per layer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum

from fastattn.attention.spec import AttentionSpec
from fastattn.errors import InputError
from fastattn.runtime.manifest import Arch


class Pattern(str, Enum):
    FULL = "full"  # every key (causal in a decoder)
    CAUSAL = "causal"  # every earlier key, in an encoder too
    SLIDING = "sliding"  # a window of W keys
    GLOBAL_LOCAL = "global_local"  # G global tokens + a window of W keys
    HIERARCHICAL = "hierarchical"  # the own block of B keys + one summary per earlier (other) block


PATTERN_FORMS = "full, causal, sliding:W, global_local:G:W or hierarchical:B"


class Norm(str, Enum):
    LAYER = "layernorm"
    RMS = "rmsnorm"


class NormPosition(str, Enum):
    PRE = "pre"  # x + f(norm(x)), final norm at the end of the stack
    POST = "post"  # norm(x + f(x)), the classic nn.Transformer shape


class Positions(str, Enum):
    LEARNED = "learned"
    ROTARY = "rotary"


class Activation(str, Enum):
    GELU = "gelu"
    GELU_TANH = "gelu_tanh"  # the tanh approximation (GPT-2's gelu_new)
    RELU = "relu"
    SILU = "silu"  # ungated (Marian's swish)
    SWIGLU = "swiglu"


class PositionIds(str, Enum):
    """What a position counts: slots of the sequence, or tokens of the mask (padding not counted)."""

    DEFAULT = "default"  # encoders count slots (0..S-1), decoders count the mask's tokens
    SLOTS = "slots"  # both count slots; decoders continue from the cache length (BART, Marian)
    TOKENS = "tokens"  # both count the mask's tokens (RoBERTa, whose positions skip padding)


class RopeKind(str, Enum):
    LINEAR = "linear"  # positions divided by factor
    LLAMA3 = "llama3"  # low frequencies divided by factor, high ones kept, a smooth band between


@dataclass(frozen=True)
class RopeScaling:
    """Rotary frequency scaling (Hugging Face ``rope_scaling``); see :mod:`fastattn.models.rope`."""

    kind: RopeKind
    factor: float
    low_freq_factor: float = 1.0  # llama3 only
    high_freq_factor: float = 4.0  # llama3 only
    original_max_positions: int = 8192  # llama3 only


@dataclass(frozen=True)
class LayerAttention:
    """The attention pattern of one layer's self-attention."""

    pattern: Pattern = Pattern.FULL
    window: int = 0
    global_tokens: int = 0
    block: int = 0  # hierarchical: positions per block

    def __post_init__(self) -> None:
        needs_window = self.pattern in (Pattern.SLIDING, Pattern.GLOBAL_LOCAL)
        if needs_window != (self.window > 0):
            raise ValueError(f"{self.pattern.value} attention {'needs' if needs_window else 'takes no'} window")
        if (self.pattern is Pattern.GLOBAL_LOCAL) != (self.global_tokens > 0):
            raise ValueError("global_tokens > 0 goes with, and only with, the global_local pattern")
        if (self.pattern is Pattern.HIERARCHICAL) != (self.block > 0):
            raise ValueError("block > 0 goes with, and only with, the hierarchical pattern")
        if self.block == 1:
            raise ValueError("hierarchical blocks need at least 2 positions")

    @classmethod
    def parse(cls, text: str) -> LayerAttention:
        """``full``, ``causal``, ``sliding:256``, ``global_local:16:256`` (G then W), ``hierarchical:64``."""
        parts = text.strip().split(":")
        try:
            pattern = Pattern(parts[0])
            nums = [int(p) for p in parts[1:]]
            if pattern in (Pattern.FULL, Pattern.CAUSAL) and not nums:
                return cls(pattern)
            if pattern is Pattern.SLIDING and len(nums) == 1:
                return cls(pattern, window=nums[0])
            if pattern is Pattern.GLOBAL_LOCAL and len(nums) == 2:
                return cls(pattern, global_tokens=nums[0], window=nums[1])
            if pattern is Pattern.HIERARCHICAL and len(nums) == 1:
                return cls(pattern, block=nums[0])
        except ValueError:
            pass
        raise ValueError(f"bad attention pattern {text!r}: use {PATTERN_FORMS} (W >= 1, B >= 2)")

    def __str__(self) -> str:
        if self.pattern in (Pattern.FULL, Pattern.CAUSAL):
            return self.pattern.value
        if self.pattern is Pattern.SLIDING:
            return f"sliding:{self.window}"
        if self.pattern is Pattern.HIERARCHICAL:
            return f"hierarchical:{self.block}"
        return f"global_local:{self.global_tokens}:{self.window}"

    def spec(self, num_heads: int, kv_heads: int, causal: bool) -> AttentionSpec:
        causal = causal or self.pattern is Pattern.CAUSAL
        return AttentionSpec(num_heads, kv_heads, causal, self.window, self.global_tokens, block=self.block)


def parse_patterns(text: str) -> tuple[LayerAttention, ...]:
    """``PATTERN[,PATTERN...]`` (the ``--attention`` option): one pattern, or one per layer.

    Raises ValueError naming the valid forms.
    """
    items = text.split(",")
    if not text.strip() or any(not t.strip() for t in items):
        raise ValueError(f"bad attention patterns {text!r}: give {PATTERN_FORMS}, comma-separated")
    return tuple(LayerAttention.parse(t) for t in items)


def with_patterns(cfg: ModelConfig, patterns: tuple[LayerAttention, ...]) -> ModelConfig:
    """``cfg`` with every layer of every stack given ``patterns``: one pattern for all layers, or one
    per layer (then each stack must have that many layers). Raises ValueError when the counts differ."""
    changes = {}
    for stack in ("encoder_layers", "decoder_layers"):
        layers = getattr(cfg, stack)
        if not layers:
            continue
        if len(patterns) not in (1, len(layers)):
            raise ValueError(
                f"{len(patterns)} attention patterns for the {len(layers)} layers of the "
                f"{stack.split('_')[0]}: give one pattern for every layer or one per layer"
            )
        changes[stack] = patterns * len(layers) if len(patterns) == 1 else patterns
    return cfg.replace(**changes)


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 256
    d_model: int = 128
    num_heads: int = 4
    kv_heads: int = 4
    ffn_dim: int = 512
    encoder_layers: tuple[LayerAttention, ...] = ()
    decoder_layers: tuple[LayerAttention, ...] = ()
    norm: Norm = Norm.LAYER
    norm_position: NormPosition = NormPosition.PRE
    positions: Positions = Positions.ROTARY
    activation: Activation = Activation.GELU
    max_positions: int = 2048  # learned positions only
    rope_theta: float = 10000.0
    num_labels: int = 0  # encoders: > 0 adds a classification head over the masked mean
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    bias: bool = True  # biases in the attention and feed-forward projections (Llama-style models: False)
    # Overrides of ``bias`` per group of projections (None: ``bias``); Qwen2 has qkv biases only.
    qkv_bias: bool | None = None
    out_bias: bool | None = None  # attention output projections
    ffn_bias: bool | None = None
    embedding_norm: bool = False  # a norm after token + position embeddings (BERT, BART)
    embedding_scale: float = 1.0  # token embeddings are multiplied by it (BART/Marian scale_embedding)
    position_offset: int = 0  # learned positions read table row position + offset (RoBERTa, BART: 2)
    position_ids: PositionIds = PositionIds.DEFAULT
    # Encoder-decoders: the decoder has its own position table and embedding norm (sharing the tokens)
    per_stack_embedding: bool = False
    lm_head_bias: bool = False  # a bias on the logits (BART/Marian final_logits_bias)
    rope_scaling: RopeScaling | None = None
    name: str = field(default="fastattn", compare=False)

    def __post_init__(self) -> None:
        if not self.encoder_layers and not self.decoder_layers:
            raise ValueError("a model needs encoder_layers, decoder_layers or both")
        for name in ("vocab_size", "d_model", "num_heads", "kv_heads", "ffn_dim", "max_positions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"kv_heads ({self.kv_heads}) must divide num_heads ({self.num_heads})")
        if self.positions is Positions.ROTARY and self.head_size % 2:
            raise ValueError("rotary positions need an even head size")
        if self.rope_scaling is not None and self.positions is not Positions.ROTARY:
            raise ValueError("rope_scaling goes with rotary positions")
        if self.position_offset < 0 or self.position_offset >= self.max_positions:
            raise ValueError(f"position_offset {self.position_offset} must be in [0, max_positions)")
        if self.per_stack_embedding and self.arch is not Arch.ENCODER_DECODER:
            raise ValueError("per_stack_embedding is for encoder-decoders")

    @property
    def arch(self) -> Arch:
        if self.encoder_layers and self.decoder_layers:
            return Arch.ENCODER_DECODER
        return Arch.ENCODER if self.encoder_layers else Arch.DECODER

    @property
    def head_size(self) -> int:
        return self.d_model // self.num_heads

    @property
    def biases(self) -> tuple[bool, bool, bool]:
        """Whether the (qkv, attention output, feed-forward) projections have biases."""
        pick = lambda override: self.bias if override is None else override  # noqa: E731
        return pick(self.qkv_bias), pick(self.out_bias), pick(self.ffn_bias)

    @property
    def position_limit(self) -> int | None:
        """The longest sequence a learned position table takes (None: rotary, unbounded)."""
        return self.max_positions - self.position_offset if self.positions is Positions.LEARNED else None

    def replace(self, **changes) -> ModelConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("encoder_layers", "decoder_layers"):
            d[key] = [str(layer) for layer in getattr(self, key)]
        for f in fields(self):
            if isinstance(d[f.name], Enum):
                d[f.name] = d[f.name].value
        if self.rope_scaling is not None:
            d["rope_scaling"]["kind"] = self.rope_scaling.kind.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        kwargs = dict(d)
        for key in ("encoder_layers", "decoder_layers"):
            if key in kwargs:
                kwargs[key] = tuple(LayerAttention.parse(s) for s in kwargs[key])
        enums = {"norm": Norm, "norm_position": NormPosition, "positions": Positions, "activation": Activation,
                 "position_ids": PositionIds}  # fmt: skip
        for key, enum in enums.items():
            if key in kwargs:
                kwargs[key] = enum(kwargs[key])
        if kwargs.get("rope_scaling") is not None:
            scaling = dict(kwargs["rope_scaling"])
            kwargs["rope_scaling"] = RopeScaling(**{**scaling, "kind": RopeKind(scaling["kind"])})
        return cls(**kwargs)


def with_attention(cfg: ModelConfig, text: str | None) -> ModelConfig:
    """``cfg`` with the layers the ``--attention PATTERN[,PATTERN...]`` option names (None: ``cfg``).

    Raises :class:`InputError` (one line naming the valid forms) for a bad pattern or count.
    """
    if text is None:
        return cfg
    try:
        return with_patterns(cfg, parse_patterns(text))
    except ValueError as e:
        raise InputError(f"--attention: {e}", "give one pattern for every layer or one per layer, comma-separated")

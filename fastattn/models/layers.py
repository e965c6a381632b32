"""Building blocks: norms, rotary embedding, attention modules, feed-forward, Transformer layers."""

from __future__ import annotations

import torch
from torch import nn

from fastattn.attention.op import attention
from fastattn.attention.spec import AttentionSpec
from fastattn.models.config import Activation, ModelConfig, Norm, NormPosition, RopeScaling
from fastattn.models.rope import inverse_frequencies

KV = tuple[torch.Tensor, torch.Tensor]


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm is Norm.RMS:
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)


class Rotary(nn.Module):
    """Rotary position embedding (rotate-half convention) for given integer positions."""

    def __init__(self, head_size: int, theta: float, scaling: RopeScaling | None = None):
        super().__init__()
        self.register_buffer("inv_freq", inverse_frequencies(head_size, theta, scaling), persistent=False)

    def forward(self, positions: torch.Tensor) -> KV:
        """positions (B, S) -> cos, sin of shape (B, S, 1, head_size)."""
        angles = positions.to(torch.float32)[..., None] * self.inv_freq
        angles = torch.cat([angles, angles], -1)[:, :, None, :]
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, heads: int, rope: KV) -> torch.Tensor:
    """Rotate packed (B, S, heads·D) projections."""
    cos, sin = rope
    B, S, _ = x.shape
    x = x.view(B, S, heads, -1)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return (x * cos + rotated * sin).reshape(B, S, -1)


class SelfAttention(nn.Module):
    """Projections around one fastattn op; grouped-query when kv_heads < num_heads."""

    def __init__(self, cfg: ModelConfig, spec: AttentionSpec):
        super().__init__()
        self.spec = spec
        d, hd = cfg.d_model, cfg.head_size
        qkv_bias, out_bias, _ = cfg.biases
        self.q_proj = nn.Linear(d, spec.num_heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(d, spec.kv_num_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, spec.kv_num_heads * hd, bias=qkv_bias)
        self.out_proj = nn.Linear(spec.num_heads * hd, d, bias=out_bias)

    def forward(
        self, x: torch.Tensor, rope: KV | None, key_mask: torch.Tensor | None, past: KV | None
    ) -> tuple[torch.Tensor, KV]:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if rope is not None:
            q, k = apply_rotary(q, self.spec.num_heads, rope), apply_rotary(k, self.spec.kv_num_heads, rope)
        out, present = attention(q, k, v, self.spec, past, key_mask)
        return self.out_proj(out), present


class CrossAttention(nn.Module):
    """Decoder-to-encoder attention; keys/values are projected once per encoding (:meth:`project`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.spec = AttentionSpec(cfg.num_heads, cfg.kv_heads)
        d, hd = cfg.d_model, cfg.head_size
        qkv_bias, out_bias, _ = cfg.biases
        self.q_proj = nn.Linear(d, cfg.num_heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(d, cfg.kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, cfg.kv_heads * hd, bias=qkv_bias)
        self.out_proj = nn.Linear(cfg.num_heads * hd, d, bias=out_bias)

    def project(self, memory: torch.Tensor) -> KV:
        return self.k_proj(memory), self.v_proj(memory)

    def forward(self, x: torch.Tensor, memory_kv: KV, memory_mask: torch.Tensor | None) -> torch.Tensor:
        out, _ = attention(self.q_proj(x), *memory_kv, self.spec, key_mask=memory_mask)
        return self.out_proj(out)


ACTIVATIONS = {
    Activation.GELU: nn.GELU,
    Activation.GELU_TANH: lambda: nn.GELU(approximate="tanh"),
    Activation.RELU: nn.ReLU,
    Activation.SILU: nn.SiLU,
    Activation.SWIGLU: nn.SiLU,  # gated: silu(gate) * up
}


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gated = cfg.activation is Activation.SWIGLU
        bias = cfg.biases[2]
        if self.gated:
            self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=bias)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=bias)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=bias)
        self.act = ACTIVATIONS[cfg.activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class Residual(nn.Module):
    """``x + f(norm(x))`` (pre-LN) or ``norm(x + f(x))`` (post-LN)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = make_norm(cfg)
        self.pre = cfg.norm_position is NormPosition.PRE

    def forward(self, x: torch.Tensor, f) -> tuple[torch.Tensor, object]:
        """``f`` returns (y, extra); returns (new x, extra)."""
        y, extra = f(self.norm(x) if self.pre else x)
        return (x + y, extra) if self.pre else (self.norm(x + y), extra)


class TransformerLayer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each in a residual."""

    def __init__(self, cfg: ModelConfig, spec: AttentionSpec, cross: bool = False):
        super().__init__()
        self.self_attn = SelfAttention(cfg, spec)
        self.self_res = Residual(cfg)
        self.cross_attn = CrossAttention(cfg) if cross else None
        self.cross_res = Residual(cfg) if cross else None
        self.ffn = FeedForward(cfg)
        self.ffn_res = Residual(cfg)

    def forward(
        self,
        x: torch.Tensor,
        rope: KV | None,
        key_mask: torch.Tensor | None,
        past: KV | None = None,
        memory_kv: KV | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KV]:
        x, present = self.self_res(x, lambda h: self.self_attn(h, rope, key_mask, past))
        if self.cross_attn is not None:
            x, _ = self.cross_res(x, lambda h: (self.cross_attn(h, memory_kv, memory_mask), None))
        x, _ = self.ffn_res(x, lambda h: (self.ffn(h), None))
        return x, present

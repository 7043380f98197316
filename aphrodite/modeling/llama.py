"""A Llama-family decoder (Llama 2/3, Mistral, Qwen2) in gpt-fast's shape.

q/k/v and gate/up are packed into one projection each (fewer, larger matmuls); every projection is a
``LoRACapableLinear`` so a learned low-rank delta can ride on it. ``forward`` returns final-normed hidden
states; ``compute_logits`` applies the LM head only to the rows the caller needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aphrodite.modeling.attention import AttentionMetadata, paged_attention
from aphrodite.modeling.config import ModelConfig
from aphrodite.modeling.layers.linear import LoRACapableLinear
from aphrodite.modeling.layers.rotary import RotaryEmbedding

KVCache = tuple[torch.Tensor, torch.Tensor]


class RMSNorm(nn.Module):
    """Root-mean-square layer norm, computed in float32 like the reference."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class LlamaAttention(nn.Module):
    """Grouped-query self-attention with RoPE."""

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        self.sizes = [q_size, kv_size, kv_size]
        self.qkv_proj = LoRACapableLinear(cfg.hidden_size, sum(self.sizes), cfg.qkv_bias, self.sizes)
        self.o_proj = LoRACapableLinear(q_size, cfg.hidden_size, cfg.o_bias)
        self.rotary = rotary
        self.scale = self.head_dim ** -0.5

    def forward(self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata,
                kv_cache: KVCache | None) -> torch.Tensor:
        B, L, _ = x.shape
        q, k, v = self.qkv_proj(x).split(self.sizes, dim=-1)
        q = q.view(B, L, self.n_heads, self.head_dim)
        k = k.view(B, L, self.n_kv, self.head_dim)
        v = v.view(B, L, self.n_kv, self.head_dim)
        q, k = self.rotary(positions, q, k)
        out = paged_attention(q, k, v, meta, kv_cache, self.scale)  # (B, L, H, hd)
        return self.o_proj(out.reshape(B, L, -1))


class LlamaMLP(nn.Module):
    """SwiGLU feed-forward with gate and up packed."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.inter = cfg.intermediate_size
        self.gate_up_proj = LoRACapableLinear(cfg.hidden_size, 2 * self.inter, cfg.mlp_bias, [self.inter] * 2)
        self.down_proj = LoRACapableLinear(self.inter, cfg.hidden_size, cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.inter, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    """Pre-norm attention + MLP block."""

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(cfg, rotary)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, positions: torch.Tensor, h: torch.Tensor, meta: AttentionMetadata,
                kv_cache: KVCache | None) -> torch.Tensor:
        h = h + self.self_attn(positions, self.input_layernorm(h), meta, kv_cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaForCausalLM(nn.Module):
    """Token ids in, final hidden states out; ``compute_logits`` for the rows that need them."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        rotary = RotaryEmbedding(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg, rotary) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = LoRACapableLinear(cfg.hidden_size, cfg.vocab_size)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                kv_caches: list[KVCache] | None = None) -> torch.Tensor:
        # input_ids, positions (B, L) -> hidden (B, L, D)
        h = self.embed_tokens(input_ids)
        for i, layer in enumerate(self.layers):
            h = layer(positions, h, meta, kv_caches[i] if kv_caches is not None else None)
        return self.norm(h)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden (N, D) -> logits (N, V) in float32
        return self.lm_head(hidden).float()

    def lora_targets(self) -> dict[str, LoRACapableLinear]:
        """Every projection that can carry a low-rank delta, by module name."""
        return {name: m for name, m in self.named_modules() if isinstance(m, LoRACapableLinear)}

"""Attention over a paged KV cache, with per-step metadata passed explicitly (no globals).

The cache of one layer is a flat pool of slots ``(num_slots, kv_heads, head_dim)`` cut into blocks of
``block_size`` slots; a sequence owns a list of blocks (its block table). Each step writes the new keys and
values at ``slot_mapping`` and, for decode and for a prefill that continues a cached prefix or an earlier
chunk, gathers each sequence's context with ``gather_index``; a prefill from position 0 attends to its own
new keys directly.
Slot 0..block_size-1 form the null block that padding positions write to and read from (always masked).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AttentionMetadata:
    """What every attention layer needs to know about the batch in this step."""

    is_prefill: bool
    mask: torch.Tensor
    """Boolean, True = may attend. Prefill (B, 1, L, L) causal and padding; decode (B, 1, 1, S); prefill with
    cached context (B, 1, L, S)."""
    slot_mapping: torch.Tensor | None = None
    """(B * L,) flat cache slot of each new token; None runs without a cache (reference forward)."""
    gather_index: torch.Tensor | None = None
    """(B, S) flat slots of each sequence's context, padded with slot 0; None: attend to the new keys only."""

    @staticmethod
    def causal(seq_lens: list[int], max_len: int, device: torch.device) -> torch.Tensor:
        """(B, 1, L, L) mask for right-padded prompts of the given lengths."""
        ar = torch.arange(max_len, device=device)
        causal = ar[None, :] <= ar[:, None]  # (L, L): key <= query
        lens = torch.tensor(seq_lens, device=device)
        valid = ar[None, :] < lens[:, None]  # (B, L) key valid
        return (causal[None] & valid[:, None, :]).unsqueeze(1)

    @staticmethod
    def extend(starts: torch.Tensor, lens: torch.Tensor, max_len: int, max_ctx: int) -> torch.Tensor:
        """(B, 1, L, S) mask for rows computing tokens ``starts[b] .. starts[b] + lens[b] - 1`` after a cached
        context: query i sees keys 0 .. starts[b] + i. Padded queries see key 0, so no row is all masked."""
        q = starts[:, None] + torch.arange(max_len, device=starts.device)  # (B, L) absolute query position
        k = torch.arange(max_ctx, device=starts.device)  # (S,)
        valid = k[None, :] < (starts + lens)[:, None]  # (B, S)
        return ((k[None, None, :] <= q[:, :, None]) & valid[:, None, :]).unsqueeze(1)


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata,
                    kv_cache: tuple[torch.Tensor, torch.Tensor] | None, scale: float) -> torch.Tensor:
    """q (B, L, H, hd), k/v (B, L, KVH, hd) -> (B, L, H, hd); writes k/v into the cache first."""
    B, L, kvh, hd = k.shape
    if kv_cache is not None and meta.slot_mapping is not None:
        k_cache, v_cache = kv_cache
        k_cache.index_copy_(0, meta.slot_mapping, k.reshape(B * L, kvh, hd))
        v_cache.index_copy_(0, meta.slot_mapping, v.reshape(B * L, kvh, hd))
    if meta.gather_index is None:
        keys, values = k.transpose(1, 2), v.transpose(1, 2)  # (B, KVH, L, hd)
    else:
        assert kv_cache is not None
        S = meta.gather_index.shape[1]
        flat = meta.gather_index.reshape(-1)
        keys = kv_cache[0].index_select(0, flat).view(B, S, kvh, hd).transpose(1, 2)  # (B, KVH, S, hd)
        values = kv_cache[1].index_select(0, flat).view(B, S, kvh, hd).transpose(1, 2)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=meta.mask,
                                         scale=scale, enable_gqa=keys.shape[1] != q.shape[2])
    return out.transpose(1, 2)  # (B, L, H, hd)

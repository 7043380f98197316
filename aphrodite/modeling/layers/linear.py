"""A linear projection that can carry a low-rank (LoRA) delta without another copy of its base weight.

``y = x W^T + b + scale * (x A^T) B^T`` with ``A: (r, in)``, ``B: (out, r)``. The delta lives in two small
tensors beside the base weight, so attaching, replacing or removing it costs O(r * (in + out)) memory and
never touches ``W``. A packed projection (q/k/v or gate/up in one matrix) carries one delta over its whole
output; per-projection adapters of rank r become one block-diagonal delta of rank 3r or 2r.

Serving layers get fixed buffers once (``allocate_lora``, rank padded to a maximum): a weight swap then only
copies into them (``load_lora_``), so it allocates nothing. Zero rows of A and zero columns of B add nothing,
so a rank-r delta padded to R computes the same output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LoRACapableLinear(nn.Module):
    """``nn.Linear`` without init cost, plus an optional low-rank delta."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 output_sizes: list[int] | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.output_sizes = output_sizes or [out_features]
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None
        self.lora_a: torch.Tensor | None = None  # (r, in)
        self.lora_b: torch.Tensor | None = None  # (out, r)
        self.lora_scale: float = 0.0
        self._buffers_ab: tuple[torch.Tensor, torch.Tensor] | None = None  # (R, in), (out, R), allocated once

    def set_lora(self, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
        """Attach (or replace) the low-rank delta ``scale * B @ A`` (new tensors; training views use this)."""
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"LoRA shapes do not chain: A {tuple(a.shape)}, B {tuple(b.shape)}")
        if a.shape[1] != self.in_features or b.shape[0] != self.out_features:
            raise ValueError(f"LoRA shapes {tuple(a.shape)}, {tuple(b.shape)} do not fit a "
                             f"{self.in_features}->{self.out_features} projection")
        w = self.weight
        self.lora_a = a.to(device=w.device, dtype=w.dtype).contiguous()
        self.lora_b = b.to(device=w.device, dtype=w.dtype).contiguous()
        self.lora_scale = float(scale)

    def clear_lora(self) -> None:
        """Drop the delta: the layer computes its base projection again."""
        self.lora_a = self.lora_b = None
        self.lora_scale = 0.0

    @property
    def max_lora_rank(self) -> int:
        """Rank of the fixed buffers (0 before ``allocate_lora``)."""
        return 0 if self._buffers_ab is None else self._buffers_ab[0].shape[0]

    def allocate_lora(self, rank: int) -> None:
        """Allocate the fixed delta buffers once: A (rank, in), B (out, rank)."""
        w = self.weight
        self._buffers_ab = (torch.zeros(rank, self.in_features, dtype=w.dtype, device=w.device),
                            torch.zeros(self.out_features, rank, dtype=w.dtype, device=w.device))

    def load_lora_(self, a: torch.Tensor | None, b: torch.Tensor | None) -> None:
        """Copy a delta already padded to the buffers' rank (scale folded into B) into the buffers; None clears.
        Only copies: no validation, no allocation (the caller checked and padded it before the safe point)."""
        if a is None or b is None:
            self.clear_lora()
            return
        buf_a, buf_b = self._buffers_ab  # type: ignore[misc]
        buf_a.copy_(a)
        buf_b.copy_(b)
        self.lora_a, self.lora_b, self.lora_scale = buf_a, buf_b, 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.lora_a is not None:
            delta = F.linear(F.linear(x, self.lora_a), self.lora_b)
            y = y + (delta if self.lora_scale == 1.0 else self.lora_scale * delta)
        return y

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"

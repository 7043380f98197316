"""A linear projection that can carry a low-rank (LoRA) delta without another copy of its base weight.

``y = x W^T + b + scale * (x A^T) B^T`` with ``A: (r, in)``, ``B: (out, r)``. The delta lives in two small
tensors beside the base weight, so attaching, replacing or removing it costs O(r * (in + out)) memory and
never touches ``W``. A packed projection (q/k/v or gate/up in one matrix) carries one delta over its whole
output; per-projection adapters of rank r become one block-diagonal delta of rank 3r or 2r.

Serving layers take deltas already padded to a fixed maximum rank with the scale folded into B
(``use_lora``): a weight swap then only points the layer at tensors prepared before the safe point, so it
copies, checks and allocates nothing, and every version has the same shapes. Zero rows of A and zero
columns of B add nothing, so a rank-r delta padded to R computes the same output.
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
        self.max_lora_rank = 0
        """Rank that ``use_lora`` deltas are padded to (0: not set up for serving swaps)."""

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

    def use_lora(self, a: torch.Tensor | None, b: torch.Tensor | None) -> None:
        """Serve a delta already padded to ``max_lora_rank`` with its scale folded into B: A (R, in),
        B (out, R), on this layer's device and dtype; None clears. No check, no copy: the caller prepared
        (and checked) the tensors before the safe point and never writes them afterwards."""
        # Plain attributes written straight into __dict__: nn.Module.__setattr__ is equivalent for them but
        # does bookkeeping worth ~3 us per attribute, most of a swap's stall over 25 projections.
        attrs = self.__dict__
        attrs["lora_a"], attrs["lora_b"], attrs["lora_scale"] = a, b, (0.0 if a is None else 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.lora_a is not None:
            delta = F.linear(F.linear(x, self.lora_a), self.lora_b)
            y = y + (delta if self.lora_scale == 1.0 else self.lora_scale * delta)
        return y

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"

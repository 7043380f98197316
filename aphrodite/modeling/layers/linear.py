"""A linear projection that can carry a low-rank (LoRA) delta without another copy of its base weight.

``y = x W^T + b + scale * (x A^T) B^T`` with ``A: (r, in)``, ``B: (out, r)``. The delta lives in two small
tensors beside the base weight, so attaching, replacing or removing it costs O(r * (in + out)) memory and
never touches ``W``. A packed projection (q/k/v or gate/up in one matrix) carries one delta over its whole
output; per-projection adapters of rank r become one block-diagonal delta of rank 3r or 2r.

Serving layers hold K resident delta sets in slot buffers allocated once (``allocate_slots``): A (K, R, in)
and B (K, out, R), every delta padded to the maximum rank R with its scale folded into B. Zero rows of A and
zero columns of B add nothing, so a rank-r delta padded to R computes the same output. Which slot each row of
the batch uses is in one ``AdapterBatch`` shared by every layer, bound once per step by the model runner
(``bind``): one slot for the whole batch costs what a single delta always cost (two thin matmuls); rows on
different slots are computed by slot group (CPU: gather the group's rows, two matmuls, scatter-add) or by the
grouped low-rank Triton kernel (CUDA, ``aphrodite/kernels/grouped_lora.py``), the Punica/S-LoRA technique.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NO_SLOT = -1
"""The slot of a row that runs on the base weights (version 0): no delta."""


class AdapterBatch:
    """Which resident delta set (slot) each row of the current batch uses; one object shared by all layers.

    ``rows`` is indexed by the leading dimension of the layers' input (a sequence per row: prefill (B, L, D)
    and decode (B, 1, D) alike). When every row uses one slot, ``uniform`` holds it (or ``NO_SLOT``) and the
    layers take the single-delta path whatever the input's shape.
    """

    def __init__(self) -> None:
        self.uniform: int = NO_SLOT
        self.rows: torch.Tensor | None = None
        """(B,) int32 slot per row when the rows use different slots; None when ``uniform`` applies."""
        self.groups: list[tuple[int, torch.Tensor]] = []
        """(slot, row indices) for each slot used by some row (``NO_SLOT`` rows left out)."""
        self.used = 0
        """1 + the highest slot some row uses (mixed batches): the stacked path reads slots below it."""
        self._token_rows: dict[int, torch.Tensor] = {}
        self._masks: dict[tuple[int, torch.dtype], torch.Tensor] = {}

    def bind(self, slots: list[int], device: torch.device) -> None:
        """Set the slot of each row for the next forward passes (the model runner, once per step)."""
        first = slots[0] if slots else NO_SLOT
        if all(s == first for s in slots):
            self.uniform, self.rows, self.groups = first, None, []
            return
        self.uniform = NO_SLOT
        self.rows = torch.tensor(slots, dtype=torch.int32, device=device)
        by_slot: dict[int, list[int]] = {}
        for i, s in enumerate(slots):
            if s != NO_SLOT:
                by_slot.setdefault(s, []).append(i)
        self.groups = [(s, torch.tensor(idx, device=device)) for s, idx in by_slot.items()]
        self.used = max(by_slot, default=NO_SLOT) + 1
        self._token_rows, self._masks = {}, {}

    @property
    def mixed(self) -> bool:
        return self.rows is not None

    def mask(self, rank: int, dtype: torch.dtype) -> torch.Tensor:
        """(B, used * rank): 1 in the rank columns of each row's own slot, 0 elsewhere (and for base rows)."""
        m = self._masks.get((rank, dtype))
        if m is None:
            cols = torch.arange(self.used * rank, device=self.rows.device) // rank
            m = self._masks[(rank, dtype)] = (cols[None, :] == self.rows[:, None]).to(dtype)
        return m

    def token_rows(self, per_row: int) -> torch.Tensor:
        """(B * per_row,) slot per flattened token, for inputs of shape (B, per_row, in)."""
        t = self._token_rows.get(per_row)
        if t is None:
            t = self._token_rows[per_row] = self.rows.repeat_interleave(per_row)
        return t


class LoRACapableLinear(nn.Module):
    """``nn.Linear`` without init cost, plus an optional low-rank delta."""

    cpu_grouping = "stacked"
    """How a CPU step with rows on different slots adds their deltas: ``stacked`` (every used slot's A and B
    in one matmul each, each row masked to its own slot's rank columns) or ``segmented`` (two matmuls per slot
    group, gathered and scattered by row); benchmarks/benchmark_multi_adapter.py compares them."""

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
        """Rank that serving deltas are padded to (0: not set up for serving)."""
        self.slot_a: torch.Tensor | None = None  # (K, R, in)
        self.slot_b: torch.Tensor | None = None  # (out, K, R): the first k slots' B are one (out, k * R) view
        self._slot_views: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._live: list[bool] = []
        """Whether each slot holds a delta for this projection (a version may leave it out)."""
        self.adapter_batch: AdapterBatch | None = None
        """The batch's slot per row, shared with every layer of the model (None: serving deltas unused)."""

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
        """Drop the delta and the serving slots' binding: the layer computes its base projection again."""
        self.lora_a = self.lora_b = None
        self.lora_scale = 0.0
        self.adapter_batch = None

    def allocate_slots(self, num_slots: int, rank: int, batch: AdapterBatch) -> None:
        """Allocate the K resident slots once (zeros: an empty slot adds nothing) and share ``batch``."""
        w = self.weight
        self.max_lora_rank = rank
        self.slot_a = torch.zeros(num_slots, rank, self.in_features, dtype=w.dtype, device=w.device)
        self.slot_b = torch.zeros(self.out_features, num_slots, rank, dtype=w.dtype, device=w.device)
        self._slot_views = [(self.slot_a[k], self.slot_b[:, k]) for k in range(num_slots)]
        self._live = [False] * num_slots
        self.adapter_batch = batch

    def load_slot(self, slot: int, a: torch.Tensor | None, b: torch.Tensor | None) -> None:
        """Copy a delta padded to ``max_lora_rank`` (scale folded into B) into ``slot``; None zeroes it."""
        self._live[slot] = False  # nothing reads a half-written slot
        if a is None:
            self.slot_a[slot].zero_()
            self.slot_b[:, slot].zero_()
        else:
            self.slot_a[slot].copy_(a)
            self.slot_b[:, slot].copy_(b)
            self._live[slot] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.lora_a is not None:  # a training view's delta
            delta = F.linear(F.linear(x, self.lora_a), self.lora_b)
            y = y + (delta if self.lora_scale == 1.0 else self.lora_scale * delta)
        batch = self.adapter_batch
        if batch is None:
            return y
        if not batch.mixed:
            if batch.uniform != NO_SLOT and self._live[batch.uniform]:
                a, b = self._slot_views[batch.uniform]
                y = y + F.linear(F.linear(x, a), b)
            return y
        return self._grouped(x, y, batch)

    def _grouped(self, x: torch.Tensor, y: torch.Tensor, batch: AdapterBatch) -> torch.Tensor:
        """Rows on different slots: each row's own delta, in one grouped launch (CUDA) or by slot group."""
        if x.shape[0] != batch.rows.shape[0]:
            raise ValueError(f"adapter batch binds {batch.rows.shape[0]} rows, the input has {x.shape[0]}")
        if x.is_cuda:  # imported here: Triton's import costs a CPU-only server ~1 s for nothing
            from aphrodite.kernels.grouped_lora import HAS_TRITON, grouped_lora_triton
        if not any(self._live[s] for s, _ in batch.groups):
            return y
        if x.is_cuda and HAS_TRITON:
            per_row = x[0].numel() // self.in_features
            y2 = y.reshape(-1, self.out_features)
            grouped_lora_triton(x.reshape(-1, self.in_features), self.slot_a, self.slot_b.transpose(0, 1),
                                batch.token_rows(per_row), y2)
            return y2.view(y.shape)
        if self.cpu_grouping == "stacked":
            return self._stacked(x, y, batch)
        for slot, idx in batch.groups:  # (n_k, ..., in) -> (n_k, ..., out), added to the group's rows
            if self._live[slot]:
                a, b = self._slot_views[slot]
                y.index_add_(0, idx, F.linear(F.linear(x.index_select(0, idx), a), b))
        return y

    def _stacked(self, x: torch.Tensor, y: torch.Tensor, batch: AdapterBatch) -> torch.Tensor:
        """Every used slot's A at once, each row's own rank columns kept, every used slot's B at once: four ops
        whatever the number of versions (their cost grows with it instead)."""
        k, r = batch.used, self.max_lora_rank
        a_all = self.slot_a[:k].view(k * r, self.in_features)  # (k R, in), contiguous
        b_all = self.slot_b.view(self.out_features, -1)[:, :k * r]  # (out, k R), rows strided: no copy
        t = F.linear(x, a_all)  # (B, ..., k R)
        mask = batch.mask(r, t.dtype)
        t.mul_(mask.view(mask.shape[0], *([1] * (t.dim() - 2)), mask.shape[1]))
        return y.add_(F.linear(t, b_all))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"

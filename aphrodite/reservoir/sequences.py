"""Ragged batches: one padded (B, T, D) tensor plus per-sequence lengths.

Every node accepts the three input forms reservoirpy accepts: one series (T, D), a batch
(B, T, D), or a list of series of different lengths; outputs come back in the same form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch

SeriesLike = Union[torch.Tensor, np.ndarray]
Series = Union[SeriesLike, Sequence[SeriesLike]]


@dataclass
class RaggedBatch:
    """A padded batch; ``form`` remembers how the caller passed it ("single", "batch" or "list")."""

    data: torch.Tensor  # (B, T, D), zeros past each length
    lengths: torch.Tensor  # (B,) int64, on the CPU
    form: str

    @property
    def ragged(self) -> bool:
        return bool((self.lengths != self.data.shape[1]).any())

    def mask(self) -> torch.Tensor:
        """(B, T) bool, True on valid steps (on ``data``'s device)."""
        steps = torch.arange(self.data.shape[1], device=self.data.device)
        return steps[None, :] < self.lengths.to(self.data.device)[:, None]

    def valid_rows(self, warmup: int = 0) -> torch.Tensor:
        """(M, D): the valid steps of every sequence, after dropping each one's first ``warmup``."""
        keep = self.mask()
        if warmup:
            keep[:, :warmup] = False
        return self.data[keep]

    def restore(self, out: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Return per-step outputs (B, T, F) in the caller's form (list entries are views)."""
        if self.form == "single":
            return out[0]
        if self.form == "list":
            return [out[i, : int(n)] for i, n in enumerate(self.lengths)]
        return out


def _to_tensor(x: SeriesLike, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() == 1:  # (T,) -> (T, 1), like reservoirpy
        t = t[:, None]
    return t.to(device=device, dtype=dtype)


def as_batch(
    x: Series,
    dtype: torch.dtype,
    device: torch.device | str,
    lengths: Sequence[int] | torch.Tensor | None = None,
) -> RaggedBatch:
    """Pad ``x`` into a :class:`RaggedBatch`; ``lengths`` may mark padding of a (B, T, D) tensor."""
    if isinstance(x, (list, tuple)):
        seqs = [_to_tensor(s, dtype, device) for s in x]
        if not seqs:
            raise ValueError("empty list of sequences")
        dims = {s.shape[-1] for s in seqs}
        if len(dims) != 1 or any(s.dim() != 2 for s in seqs):
            raise ValueError(f"every sequence must be (T_i, D) with one D, got shapes {[tuple(s.shape) for s in seqs]}")
        lens = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
        data = torch.zeros((len(seqs), int(lens.max()), dims.pop()), dtype=dtype, device=device)
        for i, s in enumerate(seqs):
            data[i, : s.shape[0]] = s
        return RaggedBatch(data, lens, "list")
    t = _to_tensor(x, dtype, device)
    form = "single" if t.dim() == 2 else "batch"
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"expected (T, D), (B, T, D) or a list of (T_i, D), got shape {tuple(t.shape)}")
    if lengths is None:
        lens = torch.full((t.shape[0],), t.shape[1], dtype=torch.int64)
    else:
        lens = torch.as_tensor(lengths, dtype=torch.int64).cpu()
        if lens.shape != (t.shape[0],) or int(lens.min()) < 0 or int(lens.max()) > t.shape[1]:
            raise ValueError(f"lengths must be ({t.shape[0]},) with values in [0, {t.shape[1]}]")
    return RaggedBatch(t, lens, form)


def device_and_dtype(x: Series) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a series (of a list's first entry); integers give float32."""
    first = torch.as_tensor(x[0] if isinstance(x, (list, tuple)) else x)
    return first.device, first.dtype if first.dtype.is_floating_point else torch.float32

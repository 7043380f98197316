"""Weight versions: the base weights plus one active set of low-rank (LoRA) deltas, swapped atomically.

The engine's narrow interface for learning: submit a version, serve (roll back to) a kept one, read the
version. Version 0 is the base model. A submission is validated and padded to a fixed rank per projection,
its scale folded into B (``prepare``), on the caller's thread, before it is queued: those tensors are
allocated once per version and never written again. At the engine's safe point ``apply``/``serve`` only
point each layer at the prepared tensors, so the stall copies, checks and allocates nothing (a copy into
one preallocated buffer set would cost 0.15-0.3 ms for the built-in model, and needs care when two swaps
are pending). A bad submission is refused before it reaches the engine and leaves the serving weights as
they were. Recent versions are kept (a bounded history) so serving another one needs no disk read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aphrodite.modeling.layers.linear import LoRACapableLinear
from aphrodite.modeling.llama import LlamaForCausalLM


@dataclass
class LoRADelta:
    """``scale * B @ A`` added to one projection: A (r, in), B (out, r)."""

    a: torch.Tensor
    b: torch.Tensor
    scale: float = 1.0


@dataclass
class PreparedVersion:
    """A version ready to copy: the deltas as submitted, and per projection A padded to the buffer rank
    (R, in) and ``scale * B`` padded to (out, R)."""

    deltas: dict[str, LoRADelta]
    padded: dict[str, tuple[torch.Tensor, torch.Tensor]]


class StaleParent(ValueError):
    """A candidate was trained from a version that no longer serves; promoting it would discard another."""


class WeightVersions:
    """Tracks which deltas serve requests and keeps recent versions for rollback."""

    def __init__(self, model: LlamaForCausalLM, keep: int = 17, max_rank: int = 16) -> None:
        if max_rank < 1:
            raise ValueError("max_lora_rank must be >= 1")
        self._targets: dict[str, LoRACapableLinear] = model.lora_targets()
        for layer in self._targets.values():  # a packed projection holds one adapter per part
            layer.max_lora_rank = max_rank * len(layer.output_sizes)
        self._history: dict[int, PreparedVersion] = {0: PreparedVersion({}, {})}
        self._evicted: list[PreparedVersion] = []
        """Versions dropped at a safe point, freed later by ``prepare`` (off the engine thread)."""
        self._keep = max(2, keep)
        self.max_rank = max_rank
        self.version = 0

    @property
    def versions(self) -> list[int]:
        return sorted(self._history)

    def deltas(self, version: int | None = None) -> dict[str, LoRADelta]:
        """The deltas of a kept version (default: the one serving now)."""
        version = self.version if version is None else version
        if version not in self._history:
            raise ValueError(f"weight version {version} is not kept (kept: {self.versions})")
        return dict(self._history[version].deltas)

    def check(self, deltas: dict[str, LoRADelta]) -> None:
        """Raise ``ValueError`` naming the first delta that does not fit the model or the buffers."""
        for name, d in deltas.items():
            layer = self._targets.get(name)
            if layer is None:
                raise ValueError(f"no LoRA-capable projection named {name!r}")
            if d.a.dim() != 2 or d.b.dim() != 2 or d.a.shape[0] != d.b.shape[1] \
                    or d.a.shape[1] != layer.in_features or d.b.shape[0] != layer.out_features:
                raise ValueError(f"delta for {name} has shapes A {tuple(d.a.shape)}, B {tuple(d.b.shape)}; "
                                 f"expected A (r, {layer.in_features}), B ({layer.out_features}, r)")
            if d.a.shape[0] > layer.max_lora_rank:
                raise ValueError(f"delta for {name} has rank {d.a.shape[0]}, more than this projection holds "
                                 f"({layer.max_lora_rank}); raise --max-lora-rank")
            if not (torch.isfinite(d.a).all() and torch.isfinite(d.b).all()):
                raise ValueError(f"delta for {name} has non-finite values")

    def prepare(self, deltas: dict[str, LoRADelta]) -> PreparedVersion:
        """Check ``deltas`` and pad them to the buffers (any thread; the serving weights are not touched)."""
        self.check(deltas)
        self._evicted.clear()
        padded = {}
        for name, d in deltas.items():
            layer, r = self._targets[name], d.a.shape[0]
            w = layer.weight
            a = torch.zeros(layer.max_lora_rank, layer.in_features, dtype=w.dtype, device=w.device)
            b = torch.zeros(layer.out_features, layer.max_lora_rank, dtype=w.dtype, device=w.device)
            a[:r] = d.a.to(w.dtype)
            b[:, :r] = (d.scale * d.b.to(torch.float32)).to(w.dtype)
            padded[name] = (a, b)
        return PreparedVersion(dict(deltas), padded)

    def apply(self, version: int, prepared: PreparedVersion, serve: bool = True, parent: int | None = None) -> int:
        """Keep ``version`` (prepared by ``prepare``) and, if ``serve``, make it the serving weights; with
        ``parent``, only if ``parent`` still serves (else ``StaleParent``, nothing changes)."""
        if parent is not None and parent != self.version:
            raise StaleParent(f"version {version} was trained from version {parent}, but {self.version} serves now")
        if version in self._history and version != self.version:
            raise ValueError(f"weight version {version} already exists")
        if version < 0:
            raise ValueError("weight versions are non-negative")
        self._history[version] = prepared
        if serve:
            self._activate(prepared)
            self.version = version
        while len(self._history) > self._keep:
            oldest = min(k for k in self._history if k not in (0, self.version, version))
            self._evicted.append(self._history.pop(oldest))  # freeing tensors here would lengthen the stall
        return self.version

    def serve(self, version: int) -> int:
        """Serve a kept version (earlier or later than the current one); returns it."""
        if version not in self._history:
            raise ValueError(f"weight version {version} is not kept (kept: {self.versions})")
        self._activate(self._history[version])
        self.version = version
        return version

    def rollback(self, to: int | None = None) -> int:
        """Serve ``to`` (default: the highest kept version below the current one); returns it."""
        if to is None:
            earlier = [v for v in self._history if v < self.version]
            if not earlier:
                raise ValueError("no earlier weight version to roll back to")
            to = max(earlier)
        return self.serve(to)

    def _activate(self, prepared: PreparedVersion) -> None:
        for name, layer in self._targets.items():
            layer.use_lora(*prepared.padded.get(name, (None, None)))


_PACKED = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
           "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}


def deltas_from_peft(model: LlamaForCausalLM, state: dict[str, torch.Tensor], scale: float) -> dict[str, LoRADelta]:
    """Convert a PEFT LoRA state dict (``...layers.N.self_attn.q_proj.lora_A.weight``) to our packed deltas.

    Adapters on projections we pack (q/k/v, gate/up) become one block-diagonal delta: A stacks the parts'
    A matrices, B places each part's B in its own rows and columns (zeros where a part has no adapter).
    """
    parts: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    for key, a in state.items():
        if ".lora_A." not in key:
            continue
        b = state[key.replace(".lora_A.", ".lora_B.")]
        module = key.split(".lora_A.")[0]
        layer = module[module.index("layers."):]  # layers.N.self_attn.q_proj
        prefix, proj = layer.rsplit(".", 1)
        name, shard = _PACKED.get(proj, (proj, 0))
        parts.setdefault(f"{prefix}.{name}", {})[shard] = (a, b)
    targets = model.lora_targets()
    deltas = {}
    for name, shards in parts.items():
        sizes = targets[name].output_sizes
        a = torch.cat([shards[i][0] for i in sorted(shards)], dim=0)  # (sum r_i, in)
        b = torch.zeros(sum(sizes), a.shape[0], dtype=a.dtype)
        col = 0
        for i in sorted(shards):
            r = shards[i][0].shape[0]
            row = sum(sizes[:i])
            b[row:row + sizes[i], col:col + r] = shards[i][1]
            col += r
        deltas[name] = LoRADelta(a, b, scale)
    return deltas

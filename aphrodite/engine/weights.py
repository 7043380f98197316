"""Weight versions: the base weights plus one active set of low-rank (LoRA) deltas, swapped atomically.

The engine's narrow interface for learning: submit a version, roll back, read the version. Version 0 is
the base model. Applying a version validates every delta before touching any layer, so a bad submission
leaves the serving weights as they were. Older versions are kept (a bounded history) for rollback.
Call ``apply`` and ``rollback`` only at the engine's safe point (``LLMEngine.submit_weights`` does).
"""

from __future__ import annotations

from collections import OrderedDict
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


class WeightVersions:
    """Tracks which deltas serve requests and keeps recent versions for rollback."""

    def __init__(self, model: LlamaForCausalLM, keep: int = 8) -> None:
        self._targets: dict[str, LoRACapableLinear] = model.lora_targets()
        self._history: OrderedDict[int, dict[str, LoRADelta]] = OrderedDict({0: {}})
        self._keep = keep
        self.version = 0

    @property
    def versions(self) -> list[int]:
        return list(self._history)

    def deltas(self, version: int | None = None) -> dict[str, LoRADelta]:
        """The deltas of a kept version (default: the one serving now)."""
        version = self.version if version is None else version
        if version not in self._history:
            raise ValueError(f"weight version {version} is not kept (kept: {list(self._history)})")
        return dict(self._history[version])

    def check(self, deltas: dict[str, LoRADelta]) -> None:
        """Raise ``ValueError`` naming the first delta that does not fit the model."""
        for name, d in deltas.items():
            layer = self._targets.get(name)
            if layer is None:
                raise ValueError(f"no LoRA-capable projection named {name!r}")
            if d.a.dim() != 2 or d.b.dim() != 2 or d.a.shape[0] != d.b.shape[1] \
                    or d.a.shape[1] != layer.in_features or d.b.shape[0] != layer.out_features:
                raise ValueError(f"delta for {name} has shapes A {tuple(d.a.shape)}, B {tuple(d.b.shape)}; "
                                 f"expected A (r, {layer.in_features}), B ({layer.out_features}, r)")
            if not (torch.isfinite(d.a).all() and torch.isfinite(d.b).all()):
                raise ValueError(f"delta for {name} has non-finite values")

    def apply(self, version: int, deltas: dict[str, LoRADelta]) -> int:
        """Make ``version`` (with exactly these deltas) the serving weights; returns the version."""
        if version in self._history and version != self.version:
            raise ValueError(f"weight version {version} already exists")
        if version < 0:
            raise ValueError("weight versions are non-negative")
        self.check(deltas)
        self._activate(deltas)
        self._history[version] = deltas
        self._history.move_to_end(version)
        while len(self._history) > self._keep:
            oldest = next(k for k in self._history if k not in (0, version))
            del self._history[oldest]
        self.version = version
        return version

    def rollback(self, to: int | None = None) -> int:
        """Serve an earlier kept version (default: the one before the current); returns it."""
        order = list(self._history)
        if to is None:
            idx = order.index(self.version)
            if idx == 0:
                raise ValueError("no earlier weight version to roll back to")
            to = order[idx - 1]
        if to not in self._history:
            raise ValueError(f"weight version {to} is not kept (kept: {order})")
        self._activate(self._history[to])
        for later in order[order.index(to) + 1:]:
            del self._history[later]  # a rolled-back version is gone for good
        self.version = to
        return to

    def _activate(self, deltas: dict[str, LoRADelta]) -> None:
        for name, layer in self._targets.items():
            d = deltas.get(name)
            if d is None:
                layer.clear_lora()
            else:
                layer.set_lora(d.a, d.b, d.scale)


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

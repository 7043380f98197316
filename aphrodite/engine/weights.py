"""Weight versions: the base weights plus low-rank (LoRA) delta sets; several serve at once, each sequence on its own.

The engine's narrow interface for learning: submit a version, serve (roll back to) a kept one, read the
version. Version 0 is the base model. A submission is validated and padded to a fixed rank per projection,
its scale folded into B (``prepare``), on the caller's thread, before it is queued; it is also copied into a
free resident slot there when one is free (``stage``, ``adapter_slots.py``). At the engine's safe point
``apply``/``serve`` only change which version new sequences get, so the stall copies, checks and allocates
nothing. A bad submission is refused before it reaches the engine and leaves the serving weights as they were.
Recent versions are kept (a bounded history) so serving another one needs no disk read.

Pinning: a sequence is admitted on the version serving then (``admit`` sets ``Sequence.weight_version``)
and runs on it to its end, whatever is promoted or rolled back meanwhile; up to ``max_resident`` versions
sit in the layers' slots at once, and one step computes every row's delta from its own slot (``bind``).
When every slot is held by versions with running sequences, a new version's sequences wait to be admitted
until one of them finishes.

Named lineages: besides the serving version (what requests for the served model get), a name may route to a
kept version of its own (``name``): a request naming it (``SamplingParams.adapter``) is admitted on that
version, pinned like any other. The engine knows only names and versions; what a name stands for (an adapter
loaded at run time, a tenant's learned lineage) is the caller's business. A named version keeps its place in
the history but holds a slot only while sequences are pinned to it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from aphrodite.engine.adapter_slots import AdapterSlots
from aphrodite.engine.sequence import Sequence
from aphrodite.modeling.layers.linear import NO_SLOT, AdapterBatch, LoRACapableLinear
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
    """Tracks which version new sequences get, keeps recent versions for rollback, and pins sequences."""

    def __init__(self, model: LlamaForCausalLM, keep: int = 17, max_rank: int = 16, max_resident: int = 4) -> None:
        if max_rank < 1:
            raise ValueError("max_lora_rank must be >= 1")
        self._targets: dict[str, LoRACapableLinear] = model.lora_targets()
        self.batch = AdapterBatch()
        """The slot of each row of the step being run; shared by every LoRA-capable layer."""
        for layer in self._targets.values():  # a packed projection holds one adapter per part
            layer.allocate_slots(max_resident, max_rank * len(layer.output_sizes), self.batch)
        self.slots = AdapterSlots(max_resident, self._targets, self.protected)
        self._device = next(model.parameters()).device
        self._history: dict[int, PreparedVersion] = {0: PreparedVersion({}, {})}
        self._evicted: list[PreparedVersion] = []
        """Versions dropped at a safe point, freed later by ``prepare`` (off the engine thread)."""
        self._keep = max(2, keep)
        self.max_rank = max_rank
        self.version = 0
        self.split: tuple[int, float] | None = None
        """(version, share): that share of new sequences (by their routing key) get ``version`` instead."""
        self.names: dict[str, int] = {}
        """Named lineage -> the kept version a request naming it gets (see the module docstring)."""

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
            self._set_version(version)
        while len(self._history) > self._keep:
            keep = {0, version, *self.protected(), *self.names.values()}
            spare = [k for k in self._history if k not in keep and not self.slots.pins[k]]
            if not spare:
                break
            oldest = min(spare)
            self._evicted.append(self._history.pop(oldest))  # freeing tensors here would lengthen the stall
        return self.version

    def serve(self, version: int) -> int:
        """Serve a kept version (earlier or later than the current one); returns it."""
        if version not in self._history:
            raise ValueError(f"weight version {version} is not kept (kept: {self.versions})")
        self._set_version(version)
        return version

    def rollback(self, to: int | None = None) -> int:
        """Serve ``to`` (default: the highest kept version below the current one); returns it."""
        if to is None:
            earlier = [v for v in self._history if v < self.version]
            if not earlier:
                raise ValueError("no earlier weight version to roll back to")
            to = max(earlier)
        return self.serve(to)

    def name(self, name: str, version: int | None, parent: int | None = None) -> int | None:
        """Requests naming ``name`` get kept ``version`` from now on (None: forget the name); with ``parent``,
        only if the name still routes to ``parent`` (else ``StaleParent``). Returns the version."""
        current = self.names.get(name, 0)
        if parent is not None and parent != current:
            raise StaleParent(f"version {version} was trained from version {parent} of {name!r}, but {current} "
                              "serves it now")
        if version is None:
            self.names.pop(name, None)
            return None
        if version not in self._history:
            raise ValueError(f"weight version {version} is not kept (kept: {self.versions})")
        self.names[name] = version
        return version

    def _set_version(self, version: int) -> None:
        """New sequences get ``version``; between steps the layers compute it (for direct use of the model).
        A version staged before the safe point is resident already; another (a rollback to one whose slot
        was reused) is copied into a free slot now, else when its first sequence is admitted."""
        self.version = version
        slot = self.slots.ensure(version, self._history[version].padded)
        self.batch.bind([NO_SLOT if slot is None else slot], self._device)

    # -- resident slots and pinning (engine thread unless it says otherwise) ---------------------------------
    def protected(self) -> set[int]:
        """Versions that keep their slot with no sequence pinned: those new sequences get."""
        return {self.version} if self.split is None else {self.version, self.split[0]}

    def set_split(self, version: int | None, share: float = 0.0) -> None:
        """Route ``share`` of new sequences to kept ``version`` (sticky by routing key); None ends the split."""
        if version is None:
            self.split = None
            return
        if version not in self._history:
            raise ValueError(f"weight version {version} is not kept (kept: {self.versions})")
        if not 0.0 <= share <= 1.0:
            raise ValueError("a split's share must be in [0, 1]")
        self.split = (version, share)

    def route(self, seq: Sequence) -> int:
        """The version a new sequence gets: its named lineage's when it names one; else the split's for its
        share of routing keys, else the serving one. A name forgotten while its request waited (an adapter
        unloaded) gets the serving version."""
        adapter = seq.params.adapter
        if adapter is not None and adapter in self.names:
            return self.names[adapter]
        if self.split is None:
            return self.version
        version, share = self.split
        return version if routing_fraction(seq.params.routing_key or seq.request_id) < share else self.version

    def stage(self, version: int, prepared: PreparedVersion) -> bool:
        """Any thread: copy a prepared version into a free slot now, so the safe point need not; False if all
        slots are busy (it is then loaded when its first sequence is admitted)."""
        return self.slots.stage(version, prepared.padded)

    def admit(self, seq: Sequence) -> bool:
        """Pin a sequence being scheduled for the first time to the version serving now (contract 1); False
        when that version is not resident and every slot is held by versions with running sequences."""
        if seq.weight_version is not None:
            return True
        version = self.route(seq)
        if self.slots.ensure(version, self._history[version].padded) is None:
            return False
        seq.weight_version = version
        self.slots.pin(version)
        return True

    def release(self, seq: Sequence) -> None:
        """A pinned sequence finished or was aborted: its version's slot may be reused once it was the last."""
        if seq.weight_version is not None:
            self.slots.unpin(seq.weight_version)

    def bind(self, seqs: list[Sequence]) -> None:
        """Point every LoRA-capable layer at each row's slot for the next forward pass (one row per sequence)."""
        slot_of = self.slots.slot_of
        unpinned = slot_of(self.version)  # only sequences run outside the engine's scheduler are unpinned
        unpinned = NO_SLOT if unpinned is None else unpinned
        self.batch.bind([unpinned if s.weight_version is None else slot_of(s.weight_version) for s in seqs],
                        self._device)


def routing_fraction(key: str) -> float:
    """A stable position in [0, 1) for a routing key (the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


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

"""Resident slots: which weight versions' deltas sit in the layers' slot buffers, and who is pinned to them.

Every LoRA-capable projection holds K slots allocated once (``LoRACapableLinear.allocate_slots``); slot k of
every layer holds the same version. A sequence is pinned to the version it was admitted with until it ends
(``Sequence.weight_version``), and a slot whose version has pinned sequences is never reused, so no sequence
ever sees two versions. A slot is free when nothing is pinned to its version and that version is not
protected (the one new sequences get, or a version they may be routed to); a free slot is reused for the next
version that needs one, the least recently used first (a named lineage, e.g. a tenant, holds a slot while it
has sequences and keeps it, unpinned, until another version needs the room).

Loading a version copies its padded deltas into a free slot (~0.5 MB per projection set of the built-in
model). ``stage`` does it on the submitter's thread, before the version is queued for the engine: the slot is
reserved under the lock (no row can be bound to it: nothing is pinned to it), filled, then published, so the
swap at the safe point only flips bookkeeping. A version that is not resident when a sequence needs it (a
rollback, or all slots were busy at submission) is loaded by ``ensure`` on the engine thread at admission.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Callable

import torch

from aphrodite.modeling.layers.linear import NO_SLOT, LoRACapableLinear

Padded = dict[str, tuple[torch.Tensor, torch.Tensor]]


class AdapterSlots:
    """K slots shared by all LoRA-capable layers; thread-safe where it says so."""

    def __init__(self, num_slots: int, targets: dict[str, LoRACapableLinear],
                 protected: Callable[[], set[int]]) -> None:
        if num_slots < 1:
            raise ValueError("max_resident_versions must be >= 1")
        self._targets = targets
        self._protected = protected
        self._holder: list[int | None] = [None] * num_slots
        """Version held by each slot (None: empty, or being filled)."""
        self._reserved: set[int] = set()
        self._lock = threading.Lock()
        self.pins: Counter[int] = Counter()
        """Version -> sequences pinned to it (admitted, not finished)."""
        self.loads = 0
        """Versions copied into a slot so far."""
        self._used: dict[int, int] = {}
        """Version -> tick of its last load or pin (for least-recently-used reuse)."""
        self._tick = 0

    @property
    def num_slots(self) -> int:
        return len(self._holder)

    def slot_of(self, version: int) -> int | None:
        """The slot holding ``version`` (``NO_SLOT`` for the base, version 0), or None when not resident."""
        if version == 0:
            return NO_SLOT
        try:
            return self._holder.index(version)
        except ValueError:
            return None

    def resident(self) -> dict[int, int]:
        """Slot -> version for every slot holding one."""
        return {s: v for s, v in enumerate(self._holder) if v is not None}

    def stage(self, version: int, padded: Padded) -> bool:
        """Any thread: copy ``version`` into a free slot unless it is resident; False when no slot is free."""
        with self._lock:
            if version == 0 or self.slot_of(version) is not None:
                return True
            slot = self._free_slot()
            if slot is None:
                return False
            self._reserved.add(slot)
            self._used.pop(self._holder[slot], None)  # type: ignore[arg-type]
            self._holder[slot] = None
        try:
            self._copy(slot, padded)
        finally:
            with self._lock:
                self._reserved.discard(slot)
        with self._lock:
            if self.slot_of(version) is None:
                self._holder[slot] = version
                self._touch(version)
        return True

    def ensure(self, version: int, padded: Padded) -> int | None:
        """Engine thread: the slot of ``version``, copying it into a free slot if needed; None if none is free."""
        slot = self.slot_of(version)
        if slot is not None:
            return slot
        with self._lock:
            slot = self._free_slot()
            if slot is None:
                return None
            self._used.pop(self._holder[slot], None)  # type: ignore[arg-type]
            self._holder[slot] = None
            self._copy(slot, padded)
            self._holder[slot] = version
            self._touch(version)
        return slot

    def pin(self, version: int) -> None:
        self.pins[version] += 1
        self._touch(version)

    def _touch(self, version: int) -> None:
        """``version`` was loaded or given a sequence now."""
        self._tick += 1
        self._used[version] = self._tick

    def unpin(self, version: int) -> None:
        """A pinned sequence ended; the version's slot becomes reusable when it was the last and it is not
        protected."""
        self.pins[version] -= 1
        if self.pins[version] <= 0:
            del self.pins[version]

    def _free_slot(self) -> int | None:
        """An empty slot, else the one holding the least recently used version that nothing needs (call under
        the lock)."""
        protected = self._protected()
        free = [s for s, v in enumerate(self._holder) if s not in self._reserved
                and (v is None or (self.pins[v] <= 0 and v not in protected))]
        if not free:
            return None
        def age(s: int) -> tuple[int, int]:
            v = self._holder[s]
            return (-1, 0) if v is None else (self._used.get(v, 0), v)
        return min(free, key=age)

    def _copy(self, slot: int, padded: Padded) -> None:
        for name, layer in self._targets.items():
            layer.load_slot(slot, *padded.get(name, (None, None)))
        self.loads += 1

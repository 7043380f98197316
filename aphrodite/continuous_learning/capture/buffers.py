"""``RecentInteractions``: the newest interactions in memory, bounded, looked up by response id."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from aphrodite.continuous_learning.interaction import Interaction


class RecentInteractions:
    """At most ``capacity`` interactions and ``max_bytes`` (estimated) by id, oldest evicted first."""

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Interaction, int]] = OrderedDict()
        self.approx_bytes = 0
        """Estimated bytes held (``Interaction.approx_bytes`` summed)."""

    def add(self, interaction: Interaction) -> None:
        size = interaction.approx_bytes()
        old = self._items.pop(interaction.id, None)
        if old is not None:
            self.approx_bytes -= old[1]
        self._items[interaction.id] = (interaction, size)
        self.approx_bytes += size
        while self._items and (len(self._items) > self.capacity
                               or (self.max_bytes is not None and self.approx_bytes > self.max_bytes)):
            self.approx_bytes -= self._items.popitem(last=False)[1][1]

    def remove(self, interaction_id: str) -> Interaction | None:
        """Forget one interaction; returns it, or None when it was not held."""
        item = self._items.pop(interaction_id, None)
        if item is None:
            return None
        self.approx_bytes -= item[1]
        return item[0]

    def get(self, interaction_id: str) -> Interaction | None:
        item = self._items.get(interaction_id)
        return None if item is None else item[0]

    def clear(self) -> None:
        self._items.clear()
        self.approx_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Interaction]:
        return (item[0] for item in list(self._items.values()))

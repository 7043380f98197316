"""``RefusalBackoff``: after the gate refuses a candidate, wait before the next learning task, longer each time.

The wait after the n-th refusal in a row is ``base_s * 2**n`` (capped at ``max_s``); a promotion resets it.
A batch refused ``give_up_after`` times unchanged (same fingerprint: the hash of its sorted interaction ids)
is set aside: its interactions teach nothing more in this process, so an unchanged refused batch is not
offered again forever (a restart gives it ``give_up_after`` more tries).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any


def fingerprint(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


class RefusalBackoff:
    """Refusal bookkeeping for the learner; ``report()`` goes into the learner's status."""

    def __init__(self, base_s: float, max_s: float = 86_400.0, give_up_after: int = 3) -> None:
        self.base_s, self.max_s, self.give_up_after = base_s, max_s, give_up_after
        self.refusals = 0
        """Refusals since the last promotion."""
        self.total_refusals = 0
        self.backoff_until = 0.0
        self.last_reason: str | None = None
        self.set_aside: set[str] = set()
        """Interaction ids of batches refused ``give_up_after`` times unchanged."""
        self._seen: Counter[str] = Counter()

    def ready(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.backoff_until

    def refused(self, ids: list[str], reason: str, now: float | None = None) -> bool:
        """Record a refusal of the batch of ``ids``; returns whether the batch is now set aside."""
        now = time.time() if now is None else now
        self.refusals += 1
        self.total_refusals += 1
        self.last_reason = reason
        self.backoff_until = now + min(self.max_s, self.base_s * 2 ** self.refusals)
        key = fingerprint(ids)
        self._seen[key] += 1
        if self._seen[key] >= self.give_up_after:
            self.set_aside.update(ids)
            del self._seen[key]
            return True
        return False

    def promoted(self) -> None:
        self.refusals = 0
        self.backoff_until = 0.0

    def report(self) -> dict[str, Any]:
        return {"refusals": self.total_refusals, "refusals_in_a_row": self.refusals,
                "backoff_until": self.backoff_until or None, "last_refusal_reason": self.last_reason,
                "set_aside_interactions": len(self.set_aside)}

"""``FailureWindow``: failures of learning work counted over a sliding time window."""

from __future__ import annotations

import threading
import time
from collections import deque


class FailureWindow:
    """Timestamps and reasons of recent failures; thread-safe (the store writer reports failures too)."""

    def __init__(self, window_s: float, keep: int = 1_000) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, str]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self.total = 0

    def record(self, reason: str, now: float | None = None) -> None:
        with self._lock:
            self._events.append((time.time() if now is None else now, reason))
            self.total += 1

    def recent(self, now: float | None = None) -> int:
        """Failures within the window."""
        since = (time.time() if now is None else now) - self.window_s
        with self._lock:
            return sum(1 for t, _ in self._events if t >= since)

    def last_reason(self) -> str | None:
        with self._lock:
            return self._events[-1][1] if self._events else None

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

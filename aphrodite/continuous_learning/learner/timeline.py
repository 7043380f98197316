"""``Timeline``: the lineage of weight versions as events (promoted, refused, served), kept durably.

Each event is one JSON line appended to ``<learning-dir>/versions/timeline.jsonl`` (file 0600) and flushed, so
the console and ``GET /v1/learning/timeline`` show what happened before a restart too. Writing is best effort:
an event that cannot be written (a full disk) is logged and kept in memory; learning never stops for it.
The file is trimmed to its newest ``keep`` events when it opens.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

KINDS = ("promoted", "refused", "served", "canary", "canary promoted", "canary rolled back")
"""``promoted``: a candidate passed the gate and serves; ``refused``: the gate (or a stale parent) refused it;
``served``: an operator rollback, an automatic rollback on live evidence, a reset, or a restore at start;
``canary``: a candidate passed the gate and serves a share of new requests; ``canary promoted`` / ``canary
rolled back``: its sequential test, its time limit or an operator decided."""


class Timeline:
    """The newest ``keep`` events in memory (oldest first), each also appended to ``path``."""

    def __init__(self, path: Path, keep: int = 500) -> None:
        self.path = path
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def open(self) -> None:
        """Read the saved events (ignoring a torn last line) and rewrite the file with the newest ``keep``."""
        if not self.path.is_file():
            return
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("kind") in KINDS:
                self._events.append(event)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self._write(tmp, "w", list(self._events))
            os.replace(tmp, self.path)
        except OSError:
            logger.warning("could not trim %s", self.path, exc_info=True)

    def record(self, kind: str, version: int | None, **details: Any) -> dict[str, Any]:
        """Append one event (``kind`` in ``KINDS``); returns it."""
        if kind not in KINDS:
            raise ValueError(f"unknown timeline event kind {kind!r}")
        event = {"time": time.time(), "kind": kind, "version": version, **details}
        with self._lock:
            self._events.append(event)
            try:
                self._write(self.path, "a", [event])
            except OSError:
                logger.warning("could not append to %s; the event is kept in memory only", self.path, exc_info=True)
        return event

    def events(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` events (all when None), oldest first."""
        with self._lock:
            events = list(self._events)
        return events if limit is None else events[-limit:] if limit > 0 else []

    def _write(self, path: Path, mode: str, events: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC), 0o600)
        with os.fdopen(fd, mode) as f:
            for event in events:
                f.write(json.dumps(event, sort_keys=True, default=str) + "\n")
            f.flush()

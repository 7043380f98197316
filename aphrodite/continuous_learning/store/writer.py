"""One background thread that does all store work, so SQLite never runs on the event loop.

Captured interactions go through ``offer``: a never-blocking hand-off bounded in count and bytes (a full queue
drops and counts); a batch the store fails to write is lost, and counted the same way.
Acknowledged writes and reads go through ``call``: awaited by the request that needs them, run in order after
everything queued before them, never dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from aphrodite.continuous_learning.interaction import Interaction

logger = logging.getLogger(__name__)
T = TypeVar("T")
_MAX_BATCH = 256
_STOP = object()


class _Captured:
    __slots__ = ("interaction", "size")

    def __init__(self, interaction: Interaction, size: int) -> None:
        self.interaction, self.size = interaction, size


class _Job:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class StoreWriter:
    """Drains captured interactions in batches to ``write_batch`` and runs submitted jobs, on one thread."""

    def __init__(self, write_batch: Callable[[list[Interaction]], None], capacity: int,
                 on_error: Callable[[BaseException, int], None] | None = None, name: str = "learning-store",
                 max_bytes: int | None = None) -> None:
        self._write_batch = write_batch
        self._on_error = on_error or (lambda exc, lost: None)
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._queued = 0
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.dropped = 0
        """Captured interactions lost: dropped because the queue was full, or in a batch the store failed to
        write."""

    @property
    def queue_depth(self) -> int:
        """Captured interactions waiting to be written."""
        return self._queued

    @property
    def queued_bytes(self) -> int:
        """Estimated bytes of the captured interactions waiting to be written."""
        return self._queued_bytes

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def offer(self, interaction: Interaction) -> bool:
        """Queue a captured interaction without ever blocking; False (and counted) when the queue is full."""
        size = interaction.pending_bytes() if self._max_bytes is not None else 0
        with self._lock:
            full = self._queued >= self._capacity or (
                self._max_bytes is not None and self._queued_bytes + size > self._max_bytes)
            if full:
                self.dropped += 1
            else:
                self._queued += 1
                self._queued_bytes += size
        if full:
            return False
        self._queue.put(_Captured(interaction, size))
        return True

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future:
        """Run ``fn`` on the writer thread after everything queued before it."""
        job = _Job(fn)
        if not self.alive and self._thread.ident is not None:
            job.future.set_exception(RuntimeError("the learning store writer has stopped"))
        else:
            self._queue.put(job)
        return job.future

    async def call(self, fn: Callable[[], T]) -> T:
        """Await ``fn`` run on the writer thread (e.g. an acknowledged write: committed when this returns)."""
        return await asyncio.wrap_future(self.submit(fn))

    def stop(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then end the thread."""
        if self.alive:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        batch: list[_Captured] = []
        while True:
            item = self._queue.get()
            while True:
                if isinstance(item, _Captured):
                    batch.append(item)
                else:
                    self._flush(batch)
                    if item is _STOP:
                        return
                    self._run_job(item)
                if len(batch) >= _MAX_BATCH:
                    self._flush(batch)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._flush(batch)

    def _flush(self, batch: list[_Captured]) -> None:
        if not batch:
            return
        try:
            self._write_batch([c.interaction for c in batch])
        except Exception as exc:  # keep serving: the lost records are counted and reported in status
            logger.error("writing %d captured interactions failed (%s: %s); they are lost", len(batch),
                         type(exc).__name__, exc)
            with self._lock:
                self.dropped += len(batch)
            self._on_error(exc, len(batch))
        finally:
            with self._lock:
                self._queued -= len(batch)
                self._queued_bytes -= sum(c.size for c in batch)
            batch.clear()

    def _run_job(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn())
        except BaseException as exc:
            job.future.set_exception(exc)

"""The learning worker's duty cycle: while the server has requests in flight, train only a share of the time.

A niced worker still gets about a whole core on a 2-core machine under load (the server does not use both), and
sharing caches and memory bandwidth with it slows serving whatever its priority. So, while serving is busy, the
worker pauses after each optimizer step: a step of ``t`` seconds is followed by ``t * (1 - duty) / duty``
seconds of sleep, i.e. it trains ``duty`` of the wall time. When serving is idle it runs flat out.
"""

from __future__ import annotations

import time
from typing import Any, Callable


class DutyCycle:
    """A ``before_step`` hook: sleeps after the previous step in proportion to its length while ``busy``.

    ``busy``: anything with a truthy ``.value`` (a shared ``multiprocessing`` value the server updates).
    """

    def __init__(self, busy: Any, duty: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not 0.0 < duty <= 1.0:
            raise ValueError(f"duty must be in (0, 1], got {duty}")
        self.busy, self.duty, self.clock, self.sleep = busy, duty, clock, sleep
        self._last: float | None = None
        self.slept = 0.0
        """Seconds paused so far (for reports and tests)."""

    def pause(self, worked: float) -> float:
        """Seconds to pause after ``worked`` seconds of training (0 when serving is idle)."""
        if not self.busy.value or self.duty >= 1.0:
            return 0.0
        return worked * (1.0 - self.duty) / self.duty

    def __call__(self) -> None:
        now = self.clock()
        if self._last is not None:  # the time since the last call is the previous step's work
            wait = self.pause(now - self._last)
            if wait > 0:
                self.sleep(wait)
                self.slept += wait
                now = self.clock()
        self._last = now

"""Waiting for another thread or process in tests: poll a condition until a deadline, never a bare sleep."""

from __future__ import annotations

import time
from typing import Any, Callable


def until(what: str, check: Callable[[], Any], deadline_s: float = 60.0, interval_s: float = 0.1) -> Any:
    """``check()``'s first truthy value; fails the test naming ``what`` once ``deadline_s`` has passed."""
    end = time.monotonic() + deadline_s
    while not (value := check()):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(interval_s)
    return value

"""Crash points for the fault tests: with ``APHRODITE_CRASH_AT=<point>`` (or ``<point>:<n>``, the n-th time) in its
environment, the process kills itself with SIGKILL (exactly what ``kill -9`` does: no handler, no flush, no
clean-up) on reaching that point.

The points sit where a crash is most likely to leave a half-done state behind (a version written but not yet
renamed into place, renamed but not yet serving, a swap at the engine's safe point). Unset, a point costs
one comparison. tests/endpoints/test_crash_recovery.py restarts the server after each and checks that
nothing acknowledged was lost and nothing partial is ever loaded.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "APHRODITE_CRASH_AT"
_name, _, _nth = (os.environ.get(CRASH_ENV) or "").partition(":")
_CRASH_AT: str | None = _name or None
_hits = {"left": int(_nth) if _nth.isdigit() else 1}

POINTS = ("version.written", "version.renamed", "engine.swap")
"""Known points: a version's files written and fsynced in its temporary directory, before the rename; the
version renamed into place, before the engine serves it and before the serving marker moves; a weight swap
at the engine's safe point, before any layer changes."""


def crash_point(name: str) -> None:
    """SIGKILL this process when ``APHRODITE_CRASH_AT`` names ``name`` (on its n-th arrival there)."""
    if _CRASH_AT is not None and _CRASH_AT == name:
        _hits["left"] -= 1
        if _hits["left"] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)

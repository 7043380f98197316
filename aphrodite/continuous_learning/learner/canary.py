"""Canary roll-out: a promoted candidate first serves a share of new requests beside its parent.

The engine splits new requests between the two (``AsyncEngine.split_weights``: a stable hash of the request's
``user``, else of its id, so one user keeps one version while the canary runs); each request stays on the
version it was admitted with to its end. The live outcomes of responses created since the canary started are
compared by the version of their first token: each explicit rating (``user_satisfaction``; neutral 0 left out)
and each correction (a corrected response counts as a negative rating). The implicit quality score of the
responses (which weighs in the model's own confidence) is reported beside them, not tested.

The test is group-sequential with ``looks`` planned looks: look k happens once the canary has
k * ``min_ratings`` outcomes (and its parent at least ``min_ratings``); at each, the one-sided two-proportion
z-test of ``evidence.py`` ("is the canary's positive rate below its parent's?") runs at alpha / looks
(Bonferroni, so the chance of rolling back a canary as good as its parent stays below alpha over all looks).
Worse at any look: the canary is rolled back (no new requests; the version stays on disk). Not worse at the
last look: it is promoted and serves everyone. Undecided after ``max_seconds`` (too few ratings came; no look
found it worse): promoted too, saying so (``timed_out``). An operator can decide earlier (``promote_canary``,
``abort_canary``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aphrodite.continuous_learning.learner.evidence import positives, rated_worse


@dataclass
class Canary:
    """One canary's state and, once decided, its decision."""

    version: int
    parent: int
    share: float
    started: float = field(default_factory=time.time)
    decision: str | None = None
    """None while it runs; then ``promoted`` or ``rolled back``."""
    reason: str = "waiting for live outcomes"
    look: int = 0
    """The last look of the sequential test that ran (0: none yet)."""
    p_value: float | None = None
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.decision is None

    def report(self) -> dict[str, Any]:
        return {"version": self.version, "parent": self.parent, "share": self.share, "started": self.started,
                "running": self.running, "decision": self.decision, "reason": self.reason, "look": self.look,
                "p_value": self.p_value, "counts": self.counts}


def judge(canary: Canary, parent: list[float], candidate: list[float], min_ratings: int, looks: int,
          alpha: float, quality: dict[int, tuple[float | None, int]] | None = None) -> str | None:
    """Update ``canary`` from the outcomes so far; returns ``promoted`` / ``rolled back`` when a look decides."""
    k1, n1 = positives(parent)
    k2, n2 = positives(candidate)
    quality = quality or {}
    for side, version, k, n in (("parent", canary.parent, k1, n1), ("canary", canary.version, k2, n2)):
        mean_quality, responses = quality.get(version, (None, 0))
        canary.counts[side] = {"version": version, "positive": k, "rated": n, "responses": responses,
                               "mean_quality": mean_quality}
    look = min(looks, n2 // min_ratings) if n1 >= min_ratings else 0
    if look <= canary.look:  # no new look reached: the test only runs at the planned looks
        if look == 0:
            canary.reason = (f"waiting for outcomes: {n2} on the canary, {n1} on its parent ({min_ratings} each "
                             f"needed for the first of {looks} looks)")
        return None
    verdict = rated_worse(parent, candidate, 1, alpha / looks)
    canary.look, canary.p_value = look, verdict.p_value
    if verdict.worse:
        canary.reason = f"worse than its parent at look {look} of {looks}: {verdict.reason}"
        return "rolled back"
    if look >= looks:
        canary.reason = f"not worse than its parent at any of {looks} looks (last: {verdict.reason})"
        return "promoted"
    canary.reason = f"look {look} of {looks} passed: {verdict.reason}"
    return None


def timed_out(canary: Canary, max_seconds: float, now: float | None = None) -> bool:
    """Whether an undecided canary has run ``max_seconds`` (0: never); if so its reason says why it is promoted."""
    now = time.time() if now is None else now
    if not canary.running or max_seconds <= 0 or now - canary.started < max_seconds:
        return False
    rated = canary.counts.get("canary", {}).get("rated", 0)
    canary.reason = (f"no evidence against it in {max_seconds:.0f} s ({rated} rated outcomes on the canary, "
                     f"too few for the test to decide; no look found it worse)")
    return True

"""Live evidence against a serving version: are its explicit ratings clearly worse than its parent's?

The test is one-sided, on the share of positive ratings (``user_satisfaction > 0``; neutral 0 is left out):
a two-proportion z-test with the pooled rate, H0 "the serving version is rated as well as its parent",
H1 "worse". It only speaks with at least ``min_ratings`` ratings on each side, and rolls back at p < alpha.
Refused candidates are no evidence here: they never served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Verdict:
    """The test's outcome; ``reason`` says it in a sentence for the status."""

    worse: bool
    p_value: float | None
    reason: str


def positives(ratings: list[float]) -> tuple[int, int]:
    """(positive ratings, non-neutral ratings)."""
    signed = [r for r in ratings if r != 0]
    return sum(1 for r in signed if r > 0), len(signed)


def rated_worse(parent: list[float], serving: list[float], min_ratings: int = 20, alpha: float = 0.05) -> Verdict:
    """One-sided two-proportion z-test: is the serving version's positive-rating rate below its parent's?"""
    k1, n1 = positives(parent)
    k2, n2 = positives(serving)
    if min(n1, n2) < min_ratings:
        return Verdict(False, None, f"too few ratings to judge ({n2} on this version, {n1} on its parent; "
                                    f"{min_ratings} each needed)")
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return Verdict(False, 1.0, "ratings identical on both versions")
    z = (p1 - p2) / se
    p_value = 0.5 * math.erfc(z / math.sqrt(2))  # P(Z >= z)
    worse = p_value < alpha
    return Verdict(worse, p_value, f"positive ratings {p2:.0%} of {n2} on this version vs {p1:.0%} of {n1} on "
                                   f"its parent (one-sided p = {p_value:.3g}, alpha {alpha})")

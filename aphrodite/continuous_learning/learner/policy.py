"""The signal policy: which stored interactions teach what (docs/continuous_learning.md, "What is learned
from what").

| source                                              | rule        | teaches                                    |
|-----------------------------------------------------|-------------|--------------------------------------------|
| feedback with ``corrected_response``                | correction  | supervised: request context -> correction  |
| curated example (``interaction_type`` != ``api``),  | curated     | supervised: prompt -> response             |
|   ``performance_feedback`` >= 0.5                   |             |                                            |
| curated example, ``performance_feedback`` < 0.5     | curated-    | KTO undesirable                            |
| served answer rated ``user_satisfaction`` > 0       | rating+     | KTO desirable                              |
| served answer rated ``user_satisfaction`` < 0       | rating-     | KTO undesirable                            |
| served answer, unrated (only ``learn_from_unrated``)| unrated     | supervised, if its quality score passes    |

A rating of exactly 0 teaches nothing. A correction supersedes the rating+ of the same answer (a rating- of
it still teaches that the original was undesirable). Duplicates (same rule kind, context and target) are
merged into one example that remembers every interaction id. One client (``api_key_hash``; anonymous callers
are one client) may contribute at most ``max_client_share`` of the client-sourced interactions of a batch, and
always at least one; curated examples are the operator's and are not capped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aphrodite.continuous_learning.interaction import Interaction
from aphrodite.continuous_learning.store.base import TrainingSignal

OPERATOR = "operator"
CURATED_RULES = frozenset({"curated", "curated-"})
SUPERVISED_RULES = frozenset({"curated", "correction"})
"""Rules whose examples are supervised targets an operator or a user gave (rehearsed in later tasks)."""


@dataclass
class PolicyExample:
    """One thing to learn, as text: a context and a target, supervised or rated."""

    rule: str
    client: str
    context: list[dict[str, Any]] | str
    """Chat messages (rendered with the chat template) or a completion prompt (plain text)."""
    target: str
    supervised: bool
    desirable: bool = True
    created: float = 0.0
    ids: list[str] = field(default_factory=list)
    """Every interaction id merged into this example."""

    @property
    def key(self) -> tuple:
        return (self.supervised, self.desirable, repr(self.context), self.target)


def context_of(i: Interaction) -> list[dict[str, Any]] | str:
    """What the model saw: chat messages, a completion prompt, or a curated prompt as one user turn."""
    if i.endpoint == "/v1/completions":
        return i.prompt or ""
    return i.messages if i.messages is not None else [{"role": "user", "content": i.prompt or ""}]


def examples_of(signal: TrainingSignal, learn_from_unrated: bool, quality_threshold: float) -> list[PolicyExample]:
    """Apply the rules to one interaction and its latest feedback."""
    i, fb = signal.interaction, signal.feedback
    curated = i.interaction_type != "api"
    client = OPERATOR if curated else (i.api_key_hash or "anonymous")
    context, answer = context_of(i), i.completion

    def make(rule: str, target: str, supervised: bool, desirable: bool = True) -> PolicyExample:
        return PolicyExample(rule, client, context, target, supervised, desirable, signal.created, [i.id])

    out = []
    correction = fb.corrected_response if fb is not None and fb.corrected_response else None
    if correction is not None:
        out.append(make("correction", correction, True))
    rating = i.user_satisfaction
    if curated and correction is None and answer.strip():
        good = (i.performance_feedback if i.performance_feedback is not None else 1.0) >= 0.5
        out.append(make("curated", answer, True) if good else make("curated-", answer, False, False))
    elif not curated and rating is not None and rating != 0 and answer.strip():
        if rating < 0:
            out.append(make("rating-", answer, False, False))
        elif correction is None:
            out.append(make("rating+", answer, False, True))
    elif (not curated and rating is None and correction is None and learn_from_unrated and answer.strip()
          and (i.quality_score or 0.0) >= quality_threshold):
        out.append(make("unrated", answer, True))
    return out


def merge_duplicates(examples: list[PolicyExample]) -> list[PolicyExample]:
    """One example per (kind, context, target): the newest, carrying every merged interaction id."""
    merged: dict[tuple, PolicyExample] = {}
    for ex in sorted(examples, key=lambda e: e.created):
        kept = merged.get(ex.key)
        if kept is not None:
            ex.ids = kept.ids + ex.ids
        merged[ex.key] = ex
    return sorted(merged.values(), key=lambda e: e.created)


def client_cap(counts: list[int], share: float) -> int:
    """Most client-sourced examples one client may keep: the largest c >= 1 with c <= share * (sum of every
    client's min(count, c)), i.e. no client above ``share`` of the client-sourced part unless it is one example."""
    cap = max(counts, default=0)
    while cap > 1:
        kept = sum(min(n, cap) for n in counts)
        allowed = max(1, math.floor(share * kept))
        if allowed >= cap:
            break
        cap = allowed
    return cap


def cap_clients(examples: list[PolicyExample], share: float) -> list[PolicyExample]:
    """Keep each client's newest interactions up to ``client_cap`` (a correction and the rating- of the same
    answer count once); curated (operator) examples are not capped."""
    by_client: dict[str, list[str]] = defaultdict(list)
    for ex in examples:
        if ex.rule not in CURATED_RULES and ex.ids[-1] not in by_client[ex.client]:
            by_client[ex.client].append(ex.ids[-1])
    cap = client_cap([len(v) for v in by_client.values()], share)
    keep = {i for ids in by_client.values() for i in ids[-cap:]}
    return [ex for ex in examples if ex.rule in CURATED_RULES or ex.ids[-1] in keep]


def admit(signals: list[TrainingSignal], learn_from_unrated: bool = False, quality_threshold: float = 0.6,
          max_client_share: float = 0.25, exclude: frozenset[str] | set[str] = frozenset()) -> list[PolicyExample]:
    """The examples a batch of signals teaches, oldest first; interactions in ``exclude`` teach nothing."""
    found = [ex for s in signals if s.interaction.id not in exclude
             for ex in examples_of(s, learn_from_unrated, quality_threshold)]
    return cap_clients(merge_duplicates(found), max_client_share)

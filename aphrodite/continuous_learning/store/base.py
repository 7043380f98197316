"""The durable store interface: interactions, user feedback on them, and the learning state.

Implementations are synchronous and used from one thread at a time (the ``StoreWriter`` thread); the SQLite
one is ``SQLiteInteractionStore``; a PostgreSQL one can fill the same interface.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aphrodite.continuous_learning.interaction import Interaction


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message says what to do."""


@dataclass(slots=True)
class StoredFeedback:
    """A user's feedback on one response, as kept durably."""

    id: str
    response_id: str
    user_satisfaction: float
    corrected_response: str | None
    comment: str | None
    created: float


# -- training signals (learner's signal policy) ----------------------------------------------------------------
@dataclass(slots=True)
class TrainingSignal:
    """An interaction the learner may learn from, with its latest user feedback (None when it has none)."""

    interaction: Interaction
    feedback: StoredFeedback | None = None

    @property
    def created(self) -> float:
        """When this signal last changed: the interaction's creation or its latest feedback, if later."""
        return max(self.interaction.created, self.feedback.created if self.feedback is not None else 0.0)
# -- end training signals --------------------------------------------------------------------------------------


@dataclass(slots=True)
class StoreCounts:
    """Row counts, with how many interactions are eligible for learning."""

    interactions: int = 0
    eligible: int = 0
    feedback: int = 0


def fold_outcomes(versions: list[int], rows: Any) -> dict[int, list[float]]:
    """``outcomes_by_version``'s result from (version, rating, corrected response) rows: each explicit rating, and
    -1 for a correction (a corrected response was not good); both backends share it."""
    found: dict[int, list[float]] = {v: [] for v in versions}
    for version, rating, corrected in rows:
        if corrected:
            found[version].append(-1.0)
        elif rating is not None:
            found[version].append(rating)
    return found


class InteractionStore(abc.ABC):
    """Durable storage for continuous learning."""

    write_error: str | None = None
    """Why the last write failed (e.g. ``database or disk is full``); None once a write succeeds."""

    @abc.abstractmethod
    def open(self) -> None:
        """Create or migrate the schema; raise ``StoreError`` with an actionable message on failure."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection; the store can be opened again."""

    @abc.abstractmethod
    def add_interactions(self, interactions: Sequence[Interaction], durable: bool = False) -> list[Interaction]:
        """Insert in one transaction and return those inserted (an id already stored is kept as is).

        Committed on return; ``durable`` also survives a power loss, not only a process crash.
        """

    @abc.abstractmethod
    def add_feedback(self, feedback: StoredFeedback, interaction: Interaction) -> bool:
        """Durably record ``feedback`` and ``interaction``'s new satisfaction and score, in one transaction.

        Inserts ``interaction`` first when it is not stored yet; returns whether it was inserted.
        """

    @abc.abstractmethod
    def get_interaction(self, interaction_id: str) -> Interaction | None:
        """The stored interaction, or None."""

    @abc.abstractmethod
    def feedback_for(self, response_id: str) -> list[StoredFeedback]:
        """All feedback on one response, oldest first."""

    @abc.abstractmethod
    def eligible(self, threshold: float, limit: int, min_created: float = 0.0) -> list[Interaction]:
        """Interactions scored at or above ``threshold`` created at or after ``min_created``, oldest first."""

    # -- training signals (learner's signal policy) ------------------------------------------------------------
    @abc.abstractmethod
    def training_signals(self, since: float, limit: int, unrated_threshold: float | None = None,
                         tenant: str | None = None) -> list[TrainingSignal]:
        """Interactions that may teach something, each with its latest feedback, whose creation or latest
        feedback is after ``since``; oldest change first. Curated examples and interactions with feedback
        always; unrated served traffic only when ``unrated_threshold`` is given and its score reaches it. Only
        ``tenant``'s interactions (None: those of the base model's lineage, which belong to no tenant)."""
    # -- end training signals ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def counts(self, threshold: float) -> StoreCounts:
        """Count rows (a full count: call it rarely)."""

    @abc.abstractmethod
    def cleanup(self, max_interactions: int, max_age_s: float, now: float) -> int:
        """Delete interactions (and their feedback) past the bounds, oldest first; return how many.

        ``max_age_s`` <= 0 keeps interactions whatever their age.
        """

    @abc.abstractmethod
    def delete_interactions(self, ids: Sequence[str]) -> list[str]:
        """Durably delete these interactions and their feedback; return the ids that were stored."""

    def trim_bytes(self) -> int:
        """When the records take more than the store's byte bound, delete the oldest (with their feedback) to
        below it; return how many. Called after writes, so the bound holds between retention clean-ups."""
        return 0

    def probe_write(self) -> None:
        """A write that changes nothing, made while ``write_error`` is set to learn whether writes succeed
        again; raises like any write."""

    @abc.abstractmethod
    def load_state(self) -> dict[str, Any]:
        """The saved learning state ({} when none)."""

    @abc.abstractmethod
    def save_state(self, state: dict[str, Any]) -> None:
        """Durably replace the saved learning state."""

    def record_admissions(self, admitted: Sequence[tuple[str, str]], now: float) -> None:
        """Record which rule of the signal policy admitted each interaction (id, rule) into a learning task."""
        raise NotImplementedError

    def admitted_by(self, interaction_id: str) -> str | None:
        """The rule that last admitted the interaction into a learning task, or None."""
        raise NotImplementedError

    # -- operator's view (console, GET /v1/learning/interactions and /curves) ------------------------------------
    def recent_interactions(self, limit: int) -> list[TrainingSignal]:
        """The newest ``limit`` interactions, newest first, each with its latest feedback (None without)."""
        raise NotImplementedError

    def feedback_series(self, since: float, bucket_s: float) -> list[tuple[float, int, float]]:
        """User feedback created at or after ``since`` in buckets of ``bucket_s`` seconds, oldest first:
        (bucket start, feedback count, mean ``user_satisfaction``); empty buckets are left out."""
        raise NotImplementedError
    # -- end operator's view -------------------------------------------------------------------------------------

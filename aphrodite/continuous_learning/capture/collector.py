"""``ServerSideDataCollector``: captures interactions and feedback, scores them and hands them to the store.

Capture runs on the event loop and never blocks: convert, keep in the recent buffer, offer to the writer.
Redaction, scoring and every store access run on the writer thread. Feedback and supplied examples are
awaited until committed, so what the API acknowledges is durable; one that cannot be committed changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aphrodite.continuous_learning.capture.buffers import RecentInteractions
from aphrodite.continuous_learning.capture.redact import Counts, redact, redact_interaction
from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.control.failures import FailureWindow
from aphrodite.continuous_learning.interaction import Interaction, InteractionFeedback, interaction_from_finished
from aphrodite.continuous_learning.metrics import LearningMetrics
from aphrodite.continuous_learning.scoring.scorer import QualityScorer
from aphrodite.continuous_learning.store.base import InteractionStore, StoreCounts, StoredFeedback
from aphrodite.continuous_learning.store.writer import StoreWriter

if TYPE_CHECKING:
    from aphrodite.continuous_learning.scoring.learned import LearnedQualityPredictor
    from aphrodite.common.observers import FinishedRequest

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class FeedbackResult:
    """An acknowledged (committed) user feedback and the interaction it rescored."""

    feedback: StoredFeedback
    interaction: Interaction
    quality_score: float


class ServerSideDataCollector:
    """Owns the in-memory buffers, the scorer and the store writer."""

    def __init__(self, config: ServerSideConfig, store: InteractionStore, scorer: QualityScorer,
                 metrics: LearningMetrics, feedback: deque[InteractionFeedback], failures: FailureWindow,
                 learned: LearnedQualityPredictor | None = None) -> None:
        self.config = config
        self.learned = learned
        """The learned quality predictor (also the scorer's predictor), or None; used on the writer thread."""
        self.store = store
        self.scorer = scorer
        self.metrics = metrics
        self.feedback = feedback
        self.failures = failures
        self.recent = RecentInteractions(config.max_interaction_buffer, config.max_interaction_buffer_bytes)
        self.writer = StoreWriter(self._write_captured, config.write_queue_size, on_error=self._store_failed,
                                  max_bytes=config.write_queue_max_bytes)
        self.counts = StoreCounts()
        """Stored rows; written by the writer thread only."""
        self.captured = 0
        self.satisfaction_sum = 0.0
        self.satisfaction_count = 0
        """Running sum and count of user satisfaction since start or reset."""
        self._scores: deque[float] = deque(maxlen=config.max_quality_scores)
        self._scores_lock = threading.Lock()
        self._waiters: dict[str, list[asyncio.Future]] = {}

    # -- event loop --------------------------------------------------------------------------------------------

    def capture(self, request: FinishedRequest) -> None:
        """Record a finished request. Never blocks; a full write queue drops the record and counts it."""
        interaction = interaction_from_finished(request, keep_hidden_states=self.learned is not None)
        self.captured += 1
        self.recent.add(interaction)
        self.metrics.captured.labels(source="api").inc()
        if not self.writer.offer(interaction):
            self.metrics.dropped.inc()
        if self._waiters:
            for waiter in self._waiters.pop(interaction.id, ()):
                if not waiter.done():
                    waiter.set_result(interaction)

    async def add_examples(self, interactions: list[Interaction]) -> list[Interaction]:
        """Score and durably store supplied examples; returns once committed."""
        def write() -> list[Interaction]:
            self._redact(interactions)
            self._score(interactions)
            self._count_inserted(self.store.add_interactions(interactions, durable=True))
            self._keep_within_bytes()
            return interactions
        await self.writer.call(write)
        for interaction in interactions:
            self.recent.add(interaction)
        self.captured += len(interactions)
        self.metrics.captured.labels(source="manual").inc(len(interactions))
        return interactions

    async def find(self, response_id: str, wait_s: float = 0.0) -> Interaction | None:
        """The interaction with this id, from memory or the store; waits up to ``wait_s`` for one being captured
        (a streamed response's id reaches the client just before the server finishes recording it)."""
        found = self.recent.get(response_id)
        if found is not None or not response_id:
            return found
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(response_id, []).append(waiter)
        try:
            found = await self.writer.call(lambda: self.store.get_interaction(response_id))
            if found is None and wait_s > 0:
                try:
                    found = await asyncio.wait_for(asyncio.shield(waiter), wait_s)
                except asyncio.TimeoutError:
                    found = None
            if found is None and wait_s > 0 and not waiter.done():  # a replica sharing the store may have written it
                found = await self.writer.call(lambda: self.store.get_interaction(response_id))
            return found or (waiter.result() if waiter.done() else None)
        finally:
            waiters = self._waiters.get(response_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[response_id]

    async def add_feedback(self, interaction: Interaction, user_satisfaction: float,
                           corrected_response: str | None, comment: str | None) -> FeedbackResult:
        """Durably record user feedback on ``interaction`` and rescore it; returns once committed (a failed
        commit leaves the interaction as it was)."""
        def write() -> tuple[StoredFeedback, float]:
            redacted = self._redact_texts(corrected_response, comment)
            record = StoredFeedback(f"fb-{uuid.uuid4().hex}", interaction.id, user_satisfaction, *redacted,
                                    time.time())
            self._redact([interaction])  # not stored yet when its capture was dropped
            old_score, old_satisfaction = interaction.quality_score, interaction.user_satisfaction
            interaction.user_satisfaction = user_satisfaction
            interaction.quality_score = self.scorer.score(interaction)
            try:
                inserted = self.store.add_feedback(record, interaction)
            except BaseException:
                interaction.quality_score, interaction.user_satisfaction = old_score, old_satisfaction
                raise
            threshold = self.config.interaction_quality_threshold
            self.counts.interactions += inserted
            self.counts.eligible += (interaction.quality_score >= threshold) - (
                not inserted and old_score is not None and old_score >= threshold)
            self.counts.feedback += 1
            if self.learned is not None:  # after the commit: a predictor failure never loses the feedback
                self._guard("training", lambda: self.learned.learn(interaction))
            self._keep_within_bytes()
            return record, interaction.quality_score

        record, score = await self.writer.call(write)
        self.metrics.feedback.inc()
        self.satisfaction_sum += user_satisfaction
        self.satisfaction_count += 1
        self.feedback.append(InteractionFeedback(
            interaction.id, interaction.endpoint, "POST", interaction.total_ms or 0.0, interaction.status_code or 200,
            user_satisfaction=user_satisfaction, error_occurred=interaction.error is not None,
            metadata={"comment": record.comment, "corrected": corrected_response is not None}))
        return FeedbackResult(record, interaction, score)

    async def delete(self, interaction_id: str) -> bool:
        """Durably delete an interaction and its feedback, and forget it in memory; False when unknown."""
        stored = await self.writer.call(lambda: self._delete_stored(interaction_id))
        held = self.recent.remove(interaction_id) is not None
        for record in [f for f in self.feedback if f.request_id == interaction_id]:
            self.feedback.remove(record)
        return stored or held

    def quality_scores(self) -> list[float]:
        """The last ``max_quality_scores`` scores."""
        with self._scores_lock:
            return list(self._scores)

    def clear_memory(self) -> None:
        """Forget the in-memory buffers (the store keeps everything)."""
        self.recent.clear()
        with self._scores_lock:
            self._scores.clear()
        self.captured = 0
        self.satisfaction_sum, self.satisfaction_count = 0.0, 0

    # -- writer thread -----------------------------------------------------------------------------------------

    def load_counts(self) -> None:
        self.counts = self.store.counts(self.config.interaction_quality_threshold)

    def _write_captured(self, batch: list[Interaction]) -> None:
        if self.learned is not None:  # before scoring: the scores use the batch's predictions
            self._guard("feature extraction", lambda: self.learned.observe(batch))
        self._redact(batch)
        self._score(batch)
        self._count_inserted(self.store.add_interactions(batch))
        for interaction in batch:  # the store has them now; memory keeps texts and metadata only
            for choice in interaction.choices:
                choice.token_ids = ()  # a shared empty tuple: no allocation per record
        self._keep_within_bytes()

    def _keep_within_bytes(self) -> None:
        """Hold the store to ``store_max_bytes`` between retention clean-ups (after a commit: a failure here
        never costs the records just written)."""
        try:
            if self.store.trim_bytes():
                self.load_counts()
        except Exception as exc:
            logger.error("trimming the learning store to its byte bound failed: %s: %s", type(exc).__name__, exc)
            self.metrics.store_errors.inc()

    def _delete_stored(self, interaction_id: str) -> bool:
        gone = self.store.delete_interactions([interaction_id])
        if gone:
            self.load_counts()
        if self.learned is not None:
            self.learned.forget(interaction_id)
        return bool(gone)

    def _redact(self, interactions: list[Interaction]) -> None:
        if self.config.redact_pii:
            counts: Counts = {}
            for interaction in interactions:
                redact_interaction(interaction, counts)
            self._count_redactions(counts)

    def _redact_texts(self, *texts: str | None) -> list[str | None]:
        if not self.config.redact_pii:
            return list(texts)
        counts: Counts = {}
        redacted = [None if t is None else redact(t, counts)[0] for t in texts]
        self._count_redactions(counts)
        return redacted

    def _count_redactions(self, counts: Counts) -> None:
        for kind, n in counts.items():
            self.metrics.redactions.labels(kind=kind).inc(n)

    def _score(self, interactions: list[Interaction]) -> None:
        scores = [self.scorer.score(i) for i in interactions]
        for interaction, score in zip(interactions, scores):
            interaction.quality_score = score
            self.metrics.quality.observe(score)
        with self._scores_lock:
            self._scores.extend(scores)

    def _count_inserted(self, inserted: list[Interaction]) -> None:
        threshold = self.config.interaction_quality_threshold
        self.counts.interactions += len(inserted)
        self.counts.eligible += sum(1 for i in inserted if (i.quality_score or 0.0) >= threshold)
        self.metrics.stored.inc(len(inserted))

    def _guard(self, what: str, work: Callable[[], object]) -> None:
        """Run quality-predictor work; a failure is counted and reported, and never costs a stored record."""
        try:
            work()
        except Exception as exc:
            logger.exception("quality predictor %s failed", what)
            self.metrics.failures.inc()
            self.failures.record(f"quality predictor {what} failed: {type(exc).__name__}")

    def _store_failed(self, exc: BaseException, lost: int) -> None:
        # Not in the failure window: a store that cannot write is reported by its ``write_error`` for exactly as
        # long as it lasts, and must not count towards rolling back the model.
        self.metrics.dropped.inc(lost)
        self.metrics.store_errors.inc()
        self.metrics.failures.inc()

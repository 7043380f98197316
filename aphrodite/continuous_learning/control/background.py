"""``BackgroundLearningProcessor``: the periodic step (retention clean-up, then a learning task when due).

``Learner`` is the learner's seam. A learning task gets the training signals (curated examples, rated or
corrected interactions; see the learner's signal policy) not yet learned from and the current production
learning rate; its success advances the learning-rate decay, its failure is counted (and its batch offered
again, with backoff). Before that, each step lets the learner check live evidence against the serving version
(explicit ratings; see ``learner/evidence.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Protocol

from aphrodite.continuous_learning.store.base import TrainingSignal

if TYPE_CHECKING:
    from aphrodite.continuous_learning.system import ContinuousLearningSystem

logger = logging.getLogger(__name__)
_MAX_BATCH = 1_024


class Learner(Protocol):
    """Turns training signals into a new weight version (hot-swapped into the engine by the learner)."""

    async def learn(self, batch: list[TrainingSignal], learning_rate: float) -> None:
        """Learn from ``batch``; raise on failure."""
        ...


class BackgroundLearningProcessor:
    """Runs ``run_once`` every ``background_learning_interval`` seconds while the system is started."""

    def __init__(self, system: ContinuousLearningSystem) -> None:
        self.system = system
        self.learner: Learner | None = None
        self._loop_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.last_run: float | None = None
        self.last_cleanup_deleted = 0
        self._claimed_until = 0.0
        """Creation time of the newest interaction handed to a running learning task."""

    @property
    def running(self) -> bool:
        """The periodic loop is alive."""
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def active_tasks(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        if not self.running:
            self._loop_task = asyncio.create_task(self._loop(), name="learning-background")

    async def stop(self) -> None:
        close = getattr(self.learner, "close", None)
        if close is not None:  # the learning worker process
            with contextlib.suppress(Exception):
                await close()
        for task in [self._loop_task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._loop_task = None
        self._tasks.clear()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.system.config.background_learning_interval)
            try:
                await self.run_once()
            except Exception as exc:  # the loop must outlive any one failure
                logger.exception("background learning step failed")
                self.system.record_failure(f"background step failed: {type(exc).__name__}")

    async def run_once(self, force: bool = False) -> None:
        """Apply retention, then start a learning task if one is due and a slot is free; ``force`` (an operator's
        explicit trigger) does not wait out a refusal back-off."""
        system, config = self.system, self.system.config
        self.last_run = time.time()
        system.metrics.background_runs.inc()
        self.last_cleanup_deleted = await system.collector.writer.call(self._cleanup)
        check = getattr(self.learner, "check_live_evidence", None)
        if check is not None and system.state.enabled:
            await check()
        if getattr(system, "tenants", None) is not None:  # each tenant's lineage learns apart (learner/tenants.py)
            await system.tenants.step(force=force)
        state = system.state
        if (self.learner is None or not state.enabled or state.paused or not getattr(system, "may_learn", True)
                or len(self._tasks) >= config.max_concurrent_learning_tasks
                or not getattr(self.learner, "ready", lambda **_: True)(ignore_backoff=force)):
            return
        since = max(state.learned_until, self._claimed_until)
        unrated = config.interaction_quality_threshold if config.learn_from_unrated else None
        batch = await system.collector.writer.call(lambda: system.store.training_signals(since, _MAX_BATCH, unrated))
        batch = [s for s in batch if s.created > since]
        if len(batch) >= config.min_interactions_for_learning:
            self._claimed_until = max(i.created for i in batch)
            task = asyncio.create_task(self._learn(batch, since), name="learning-task")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _cleanup(self) -> int:
        config, collector = self.system.config, self.system.collector
        deleted = self.system.store.cleanup(config.store_max_interactions, config.store_max_age_days * 86_400.0,
                                            time.time())
        if deleted:
            collector.load_counts()
        return deleted

    async def _learn(self, batch: list[TrainingSignal], since: float) -> None:
        system = self.system
        try:
            await self.learner.learn(batch, system.state.learning_rate(system.config))  # type: ignore[union-attr]
        except Exception as exc:
            logger.exception("learning step failed")
            system.record_failure(f"learning step failed: {type(exc).__name__}")
            self._claimed_until = min(self._claimed_until, since)  # offer the batch again next time
            return
        await system.update_state(learning_steps=system.state.learning_steps + 1,
                                  learned_until=max(system.state.learned_until, max(i.created for i in batch)))

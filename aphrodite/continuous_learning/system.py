"""``ContinuousLearningSystem``: continuous learning for one server, wired together.

It is the app's request observer (``on_request_finished``), a lifecycle object (``start``/``stop``) and what
the learning routes and the monitoring middleware talk to. It reaches the engine through its narrow
learning interface: read ``weight_version``, ``submit_weights``, ``rollback_weights`` (the learner).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from aphrodite.continuous_learning.control.background import BackgroundLearningProcessor
from aphrodite.continuous_learning.capture.collector import ServerSideDataCollector
from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.control.actions import ControlActions, default_actions
from aphrodite.continuous_learning.control.failures import FailureWindow
from aphrodite.continuous_learning.interaction import InteractionFeedback
from aphrodite.continuous_learning.scoring.learned import LearnedQualityPredictor
from aphrodite.continuous_learning.learner.lora import LoRALearner, abort_canary, promote_canary, rollback, trigger
from aphrodite.continuous_learning.metrics import LearningMetrics
from aphrodite.continuous_learning.capture.monitor import RequestMonitor
from aphrodite.continuous_learning.scoring.scorer import QualityScorer
from aphrodite.continuous_learning.store.factory import create_store
from aphrodite.continuous_learning.control.state import LearningState
from aphrodite.continuous_learning.fleet.export import AdapterExporter
from aphrodite.continuous_learning.store.base import InteractionStore

if TYPE_CHECKING:
    from aphrodite.common.observers import FinishedRequest

logger = logging.getLogger(__name__)
# Rough per-record sizes for the memory estimate of the small buffers.
_FEEDBACK_BYTES, _SCORE_BYTES = 300, 32


class ContinuousLearningSystem:
    """Capture, feedback, scoring, storage, control and background learning for one server."""

    def __init__(self, config: ServerSideConfig, engine: Any = None, registry: CollectorRegistry | None = None,
                 store: InteractionStore | None = None, scorer: QualityScorer | None = None) -> None:
        self.config = config
        self.engine = engine
        self.metrics = LearningMetrics(registry if registry is not None else CollectorRegistry())
        self.state = LearningState()
        self.failures = FailureWindow(config.failure_window_s)
        self.feedback: deque[InteractionFeedback] = deque(maxlen=config.max_feedback_buffer)
        self.store = store or create_store(config)
        self.scorer = scorer or QualityScorer()
        self.quality_predictor = (LearnedQualityPredictor(config, device=str(getattr(engine, "device", "cpu")))
                                  if config.quality_predictor == "reservoir" else None)
        if self.quality_predictor is not None:
            self.scorer.set_predictor(self.quality_predictor)
        self.collector = ServerSideDataCollector(config, self.store, self.scorer, self.metrics, self.feedback,
                                                 self.failures, self.quality_predictor)
        self.monitor = RequestMonitor(self.metrics, self.feedback if config.enable_performance_feedback else None)
        self.processor = BackgroundLearningProcessor(self)
        self.actions: ControlActions = default_actions()
        self.learner: LoRALearner | None = None
        if config.learner == "lora" and hasattr(engine, "submit_weights"):
            self.learner = self.processor.learner = LoRALearner(self, config)
            self.actions.register("trigger", "Run the background learning step now.", trigger)
            self.actions.register("rollback", "Serve kept weight version `version` (default: the serving "
                                  "version's parent); GET /v1/learning/versions lists them.", rollback)
            self.actions.register("promote_canary", "The running canary serves every new request now.",
                                  promote_canary)
            self.actions.register("abort_canary", "The running canary gets no new requests; its parent serves "
                                  "everyone.", abort_canary)
        self.tenants: Any = None
        """Per-tenant adapters (``learner/tenants.py``) with --learning-enable-tenant-adapters and the LoRA learner."""
        if config.enable_tenant_adapters and self.learner is not None:
            from aphrodite.continuous_learning.learner.tenants import Tenants

            self.tenants = Tenants(self, config)
        elif config.enable_tenant_adapters:
            logger.warning("per-tenant adapters need the LoRA learner and an engine; they are off")
        self.exporter: AdapterExporter | None = None
        if config.export_dir:  # issue 12
            self.exporter = AdapterExporter(config.export_dir, config.export_name,
                                            config.export_base_model or self.model_name, config.learner_keep_versions)
        self.version_listeners: list[Any] = []
        """Coroutine functions ``(version, path)`` awaited when a version starts serving (issue 12)."""
        self.fleet: Any = None
        if config.store.startswith(("postgresql://", "postgres://")) and self.learner is not None:
            from aphrodite.continuous_learning.fleet.replica import FleetReplica  # psycopg: an optional extra

            self.fleet = FleetReplica(self, config.store, config.replica_id, config.replica_url, config.fleet_poll_s)
        self.started = False
        self._state_lock = asyncio.Lock()
        self._register_gauges()

    # -- what the rest of the server calls ---------------------------------------------------------------------

    @property
    def weight_version(self) -> int:
        """The engine's current weight version (0 = base model)."""
        return int(getattr(self.engine, "weight_version", 0) or 0)

    @property
    def model_name(self) -> str:
        return str(getattr(self.engine, "model_name", "") or "")

    @property
    def capturing(self) -> bool:
        return self.state.enabled and self.config.enable_user_interactions

    @property
    def wants_hidden_states(self) -> bool:
        """``RequestObserver``: ask the engine for hidden states while the quality predictor can use them."""
        return self.quality_predictor is not None and self.capturing

    def on_request_finished(self, request: FinishedRequest) -> None:
        """``RequestObserver``: capture a finished completion or chat request. Never blocks."""
        if self.capturing:
            self.collector.capture(request)

    async def start(self) -> None:
        """Open the store (raises ``StoreError`` with what to fix), restore the saved state, start the loop."""
        if self.started:
            return
        self.collector.writer.start()
        saved = await self.collector.writer.call(self._open_store)
        self.state = LearningState.from_dict(saved)
        self.processor.start()
        if self.learner is not None:
            try:
                version = await self.learner.restore()
                if version:
                    logger.info("serving weight version %d again, as before the restart", version)
                await self.version_served(version, self.learner.versions.path(version) if version else None)
            except Exception:  # a damaged version file must not stop the server: serve the base weights
                logger.exception("could not restore the saved weight version; serving the base weights")
                self.record_failure("weight version restore failed")
        if self.tenants is not None:  # each tenant's saved version serves it again
            await self.tenants.open()
        if self.fleet is not None:  # serve the fleet's version before taking traffic (issue 12)
            await self.fleet.start()
        self.started = True

    async def stop(self) -> None:
        """Stop the background loop, write what is queued, close the store."""
        if self.fleet is not None:
            await self.fleet.stop()
        if self.tenants is not None:
            await self.tenants.stop()
        await self.processor.stop()
        if self.quality_predictor is not None:
            self.collector.writer.submit(self._save_quality_predictor)
        self.collector.writer.submit(self.store.close)
        await asyncio.to_thread(self.collector.writer.stop)
        self.started = False

    async def update_state(self, **changes: Any) -> None:
        """Change the learning state once it is saved durably: a change that cannot be saved changes nothing."""
        async with self._state_lock:  # one change at a time, each applied to the last saved state
            new_state = dataclasses.replace(self.state, **changes)
            saved = new_state.to_dict()
            await self.collector.writer.call(lambda: self.store.save_state(saved))
            self.state = new_state

    async def reload_state(self) -> None:
        """Read the learning state saved in the store again (replicas sharing one store: a control action sent
        to any replica reaches all of them at their next fleet check; issue 12)."""
        async with self._state_lock:
            saved = await self.collector.writer.call(self.store.load_state)
            self.state = LearningState.from_dict(saved)

    async def reset(self) -> None:
        """Clear the learning-rate schedule, statistics and in-memory buffers; stored data is kept."""
        await self.update_state(learning_steps=0, reset_at=time.time())
        self.collector.clear_memory()
        self.monitor.reset()
        self.feedback.clear()
        self.failures.clear()

    async def delete_interaction(self, interaction_id: str) -> bool:
        """Durably delete an interaction and its feedback, forget it in memory and tell the learner (whose
        versions' manifests then name it); False when it is unknown."""
        if not await self.collector.delete(interaction_id):
            return False
        forget = getattr(self.learner, "forget", None)
        if forget is not None:
            try:
                result = forget([interaction_id])
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # the deletion stands; the unmarked versions are reported
                logger.exception("marking the versions that learned from %s failed", interaction_id)
                self.record_failure(f"marking versions for a deleted interaction failed: {type(exc).__name__}")
        return True

    async def version_served(self, version: int, path: Any) -> None:
        """A version serves now (promoted, rolled back or restored; ``path`` its PEFT directory): export it for
        vLLM (``--learning-export-dir``), publish it to the other replicas and tell ``version_listeners`` (with
        the exported directory when exporting). A failure is logged and counted,
        never raised: serving goes on."""
        if self.fleet is not None:
            await self.fleet.publish(version, path)
        if self.exporter is not None:
            try:
                path = await asyncio.to_thread(self.exporter.export, version, path)
            except Exception as exc:
                logger.exception("exporting weight version %d to %s failed", version, self.exporter.root)
                self.record_failure(f"exporting version {version} failed: {type(exc).__name__}")
                return
        for listener in self.version_listeners:  # e.g. the --upstream front pushing it to its upstream
            await listener(version, path)

    @property
    def may_learn(self) -> bool:
        """Whether this server runs learning tasks: always alone; among replicas, only the leader."""
        return self.fleet is None or self.fleet.may_learn()

    def record_failure(self, reason: str) -> None:
        self.failures.record(reason)
        self.metrics.failures.inc()

    # -- health ------------------------------------------------------------------------------------------------

    def health_status(self) -> str:
        """``unhealthy`` (store writer or background loop down), ``degraded`` (the store cannot write),
        ``disabled``, ``degraded`` (too many recent failures), ``paused`` or ``healthy``: the first that holds."""
        return self.health_report()[0]

    def health_report(self) -> tuple[str, str | None]:
        """The health status and, unless healthy, the reason in a sentence."""
        if self.started and not self.collector.writer.alive:
            return "unhealthy", "the learning store writer has stopped; restart the server"
        if self.started and not self.processor.running:
            return "unhealthy", "the background learning loop has stopped; restart the server"
        if self.store.write_error is not None:
            return "degraded", (f"the learning store cannot write ({self.store.write_error}); captured "
                                f"interactions are dropped ({self.collector.writer.dropped} so far) and feedback, "
                                "examples and control actions are refused until writes succeed again")
        if not self.state.enabled:
            return "disabled", 'continuous learning is disabled (control action "enable" turns it on)'
        recent = self.failures.recent()
        if recent > self.config.max_recent_failures:
            return "degraded", (f"{recent} failures in the last {self.config.failure_window_s:g} s "
                                f"(last: {self.failures.last_reason()})")
        if self.state.paused:
            return "paused", 'background learning is paused (control action "resume" resumes it)'
        return "healthy", None

    async def check_store(self, timeout_s: float = 2.0) -> None:
        """While the store cannot write, try a write that changes nothing, so health sees space coming back."""
        if self.store.write_error is None or not self.collector.writer.alive:
            return
        try:
            await asyncio.wait_for(self.collector.writer.call(self.store.probe_write), timeout_s)
        except Exception:  # still failing (write_error says why) or busy: health reports what is known
            pass

    def memory_bytes(self) -> int:
        """Estimated bytes held by the in-memory buffers."""
        return (self.collector.recent.approx_bytes + _FEEDBACK_BYTES * len(self.feedback)
                + _SCORE_BYTES * len(self.collector.quality_scores())
                + (self.quality_predictor.approx_bytes if self.quality_predictor is not None else 0))

    @property
    def total_interactions(self) -> int:
        """Interactions stored or waiting to be written."""
        return self.collector.counts.interactions + self.collector.writer.queue_depth

    # -- internals ---------------------------------------------------------------------------------------------

    def _open_store(self) -> dict[str, Any]:
        self.store.open()
        self.collector.load_counts()
        if self.quality_predictor is not None:
            self.quality_predictor.load()
        return self.store.load_state()

    def _register_canary_gauges(self) -> None:
        """The canary of issue 11: -1 / NaN when none is running."""
        def read(fn):
            def value() -> float:
                canary = self.learner.canary if self.learner is not None else None
                if canary is None or not canary.running:
                    return -1.0 if fn is None else float("nan")
                return float(canary.version) if fn is None else float(fn(canary))
            return value
        g = self.metrics.gauge
        g("canary_version", "Weight version running as a canary (-1: none).", read(None))
        g("canary_share", "Share of new requests the canary serves.", read(lambda c: c.share))
        g("canary_rated", "Live outcomes (ratings, corrections) of the canary's responses.",
          read(lambda c: c.counts.get("canary", {}).get("rated", 0)))
        g("canary_parent_rated", "Live outcomes of its parent's responses since the canary started.",
          read(lambda c: c.counts.get("parent", {}).get("rated", 0)))
        g("canary_p_value", "One-sided p-value of the canary's last look (is it worse than its parent?).",
          read(lambda c: float("nan") if c.p_value is None else c.p_value))

    def _save_quality_predictor(self) -> None:
        try:
            self.quality_predictor.save()  # type: ignore[union-attr]
        except Exception:  # shutdown goes on; the previous save (every few labels) is still there
            logger.exception("saving the quality predictor failed")

    def _register_gauges(self) -> None:
        g = self.metrics.gauge
        g("enabled", "1 when continuous learning is enabled.", lambda: float(self.state.enabled))
        g("paused", "1 when background learning is paused.", lambda: float(self.state.paused))
        g("weight_version", "Engine weight version (0 = base model).", lambda: float(self.weight_version))
        self._register_canary_gauges()
        g("current_learning_rate", "Production learning rate after decay.",
          lambda: self.state.learning_rate(self.config))
        g("stored_interactions", "Interactions in the store.", lambda: float(self.collector.counts.interactions))
        g("eligible_interactions", "Stored interactions at or above the quality threshold.",
          lambda: float(self.collector.counts.eligible))
        g("stored_feedback", "User feedback records in the store.", lambda: float(self.collector.counts.feedback))
        g("write_queue_depth", "Captured interactions waiting for the store writer.",
          lambda: float(self.collector.writer.queue_depth))
        g("memory_bytes", "Estimated bytes held by the in-memory learning buffers.", lambda: float(self.memory_bytes()))
        g("recent_failures", "Failures within the failure window.", lambda: float(self.failures.recent()))
        q = self.quality_predictor
        g("quality_predictor_weight", "Weight in [0, 1] of the learned quality predictor: its measured skill "
          "on explicit feedback (0 when disabled or not yet skilful).", lambda: q.accuracy if q else 0.0)
        g("quality_predictor_labels", "Explicit labels the learned quality predictor has learned from.",
          lambda: float(q.labels_seen) if q else 0.0)

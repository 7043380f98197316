"""``OpenAIServingContinuousLearning``: the handlers behind /v1/learning/*.

Reports are built from in-memory counters only (no store access), so status and metrics stay fast under
load. Writes (manual, learn, feedback, control) return once committed to the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sqlite3
from collections.abc import Awaitable
from typing import Any, TypeVar

from aphrodite.continuous_learning.interaction import Interaction, supplied_interaction
from aphrodite.continuous_learning.store.base import StoreError
from aphrodite.continuous_learning.system import ContinuousLearningSystem
from aphrodite.endpoints.auth import Principal
from aphrodite.endpoints.openai.errors import APIError, quote
from aphrodite.endpoints.openai.learning_protocol import (ControlRequest, ControlResponse, FeedbackRequest,
                                                          FeedbackResponse, InteractionAck, InteractionDeleted,
                                                          LearnRequest, LearnResponse, ManualLearningRequest)

logger = logging.getLogger(__name__)
T = TypeVar("T")
_MB = 1_000_000.0


class OpenAIServingContinuousLearning:
    """Shapes the learning system's state into API responses and applies API requests to it."""

    def __init__(self, system: ContinuousLearningSystem) -> None:
        self.system = system

    # -- reads -------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        s = self.system
        success = s.monitor.success_rate
        return {
            "object": "learning.status",
            "status": s.health_status(),
            "learning_enabled": s.state.enabled,
            "paused": s.state.paused,
            "weight_version": s.weight_version,
            "learner_notice": getattr(s.learner, "notice", None),
            "model": s.model_name,
            "overview": {
                "total_interactions": s.total_interactions,
                "success_rate": 1.0 if success is None else round(success, 6),
                "current_learning_rate": s.state.learning_rate(s.config),
                "eligible_interactions": s.collector.counts.eligible,
                "feedback_count": s.collector.counts.feedback,
                "average_quality_score": _mean(s.collector.quality_scores()),
            },
            "system_health": {
                "background_processing": s.processor.running and s.state.enabled and not s.state.paused,
                "recent_failures": s.failures.recent(),
                "memory_usage_mb": round(s.memory_bytes() / _MB, 3),
                "write_queue_depth": s.collector.writer.queue_depth,
                "dropped_interactions": s.collector.writer.dropped,
            },
            # replicas sharing a PostgreSQL store (issue 12): leader, each replica's version and lag
            "fleet": s.fleet.report() if getattr(s, "fleet", None) is not None else None,
        }

    def metrics(self) -> dict[str, Any]:
        s, c = self.system, self.system.collector
        scores = c.quality_scores()
        threshold = s.config.interaction_quality_threshold
        return {
            "object": "learning.metrics",
            "server": {
                "monitored_requests": s.monitor.requests,
                "errors": s.monitor.errors,
                "success_rate": s.monitor.success_rate,
                "latency_ms": s.monitor.latency_percentiles(),
                "by_endpoint": {ep: {"requests": n, "errors": e} for ep, (n, e) in s.monitor.by_endpoint.items()},
            },
            "capture": {
                "captured": c.captured,
                "stored": c.counts.interactions,
                "dropped": c.writer.dropped,
                "write_queue_depth": c.writer.queue_depth,
                "write_queue_capacity": s.config.write_queue_size,
                "in_memory": len(c.recent),
            },
            "feedback": {
                "stored": c.counts.feedback,
                "in_memory": len(s.feedback),
                "average_user_satisfaction": (c.satisfaction_sum / c.satisfaction_count
                                              if c.satisfaction_count else None),
            },
            "learning": {
                "weight_version": s.weight_version,
                "eligible_interactions": c.counts.eligible,
                "quality_threshold": threshold,
                "quality_scores": {"count": len(scores), "mean": _mean(scores),
                                   "min": min(scores, default=None), "max": max(scores, default=None),
                                   "eligible_fraction": _mean([float(x >= threshold) for x in scores])},
                "learning_steps": s.state.learning_steps,
                "current_learning_rate": s.state.learning_rate(s.config),
                "active_learning_tasks": s.processor.active_tasks,
                "last_background_run": s.processor.last_run,
                "quality_predictor": s.quality_predictor.report() if s.quality_predictor is not None else None,
                "learner": s.learner.report() if s.learner is not None else None,
            },
            "system": {
                "memory_usage_mb": round(s.memory_bytes() / _MB, 3),
                "recent_failures": s.failures.recent(),
                "total_failures": s.failures.total,
                "last_failure": s.failures.last_reason(),
            },
        }

    async def versions(self) -> dict[str, Any]:
        """Kept weight versions (base first) with their manifest summaries, and which one serves."""
        s = self.system
        rows = ([{"version": 0, "parent": None, "serving": s.weight_version == 0, "base": True}]
                if s.learner is None else await asyncio.to_thread(s.learner.list_versions))
        canary = s.learner.canary if s.learner is not None else None
        return {"object": "list", "data": rows, "serving": s.weight_version,
                "canary": canary.report() if canary is not None else None}

    async def health(self) -> tuple[dict[str, Any], int]:
        """The health report and its HTTP status: 503 when ``unhealthy`` (store writer or background loop down)
        or ``degraded`` (the store cannot write, or too many recent failures), with the reason; 200 otherwise."""
        s = self.system
        await s.check_store()
        status, reason = s.health_report()
        checks = {"store_writer": s.collector.writer.alive, "background_processing": s.processor.running,
                  "store_writable": s.store.write_error is None,
                  "write_queue_full": s.collector.writer.queue_depth >= s.config.write_queue_size,
                  "dropped_interactions": s.collector.writer.dropped,
                  "recent_failures": s.failures.recent()}
        body = {"object": "learning.health", "status": status, "reason": reason, "learning_enabled": s.state.enabled,
                "weight_version": s.weight_version, "checks": checks}
        return body, 503 if status in ("unhealthy", "degraded") else 200

    def config(self) -> dict[str, Any]:
        s = self.system
        return {"object": "learning.config", "config": _without_paths(dataclasses.asdict(s.config)),
                "scoring": dataclasses.asdict(s.scorer.weights), "control_actions": s.actions.describe()}

    # -- writes ------------------------------------------------------------------------------------------------

    async def manual(self, req: ManualLearningRequest) -> InteractionAck:
        return (await self._store_examples([req]))[0]

    async def learn(self, req: LearnRequest) -> LearnResponse:
        acks = await self._store_examples(req.interactions)
        return LearnResponse(data=acks, stored=len(acks), eligible=sum(a.eligible for a in acks))

    async def feedback(self, req: FeedbackRequest, caller: Principal | None = None) -> FeedbackResponse:
        """Store a rating of an earlier response. Only the key that was served the response (or the admin) may
        rate it; to anyone else it does not exist (404, the same answer as for an unknown id)."""
        s = self.system
        if not s.config.enable_response_feedback:
            raise APIError("Response feedback is turned off on this server; restart it with "
                           "--learning-enable-response-feedback to accept feedback.", 403,
                           code="feedback_disabled", type="permission_error")
        self._require_enabled()
        interaction = await self._guard(s.collector.find(req.response_id, s.config.feedback_wait_s))
        if interaction is None or not _may_rate(caller, interaction):
            raise APIError(f"No response with id '{quote(req.response_id)}' is known to the learning store (it may be "
                           "older than the retention period, or was served with learning disabled).", 404,
                           param="response_id", code="response_not_found")
        result = await self._guard(s.collector.add_feedback(interaction, req.user_satisfaction,
                                                            req.corrected_response, req.comment))
        return FeedbackResponse(id=result.feedback.id, created=int(result.feedback.created),
                                response_id=interaction.id, user_satisfaction=req.user_satisfaction,
                                quality_score=result.quality_score, eligible=self._eligible(result.quality_score))

    async def delete_interaction(self, interaction_id: str) -> InteractionDeleted:
        if not await self._guard(self.system.delete_interaction(interaction_id)):
            raise APIError(f"No interaction with id '{interaction_id[:64]}' is in the learning store.", 404,
                           param="interaction_id", code="interaction_not_found")
        return InteractionDeleted(id=interaction_id)

    async def control(self, req: ControlRequest) -> ControlResponse:
        s = self.system
        if req.tenant is not None:
            return await self._tenant_control(req)
        action = s.actions.get(req.action)
        if action is None:
            raise APIError(f"Unknown action '{quote(req.action)}'; use one of: {', '.join(s.actions.names)}.", 400,
                           param="action", code="invalid_action")
        try:
            message = await self._guard(action.run(s, req.version))
        except ValueError as exc:  # an unknown version, or a version for an action that takes none
            raise APIError(f"{exc}.", 400, param="version", code="invalid_version") from exc
        s.metrics.control_actions.labels(action=action.name).inc()
        return ControlResponse(action=action.name, message=message, status=s.health_status(),
                               learning_enabled=s.state.enabled, paused=s.state.paused)

    async def _tenant_control(self, req: ControlRequest) -> ControlResponse:
        """``rollback`` of one tenant's lineage (per-tenant adapters); the other actions act on the whole server."""
        s = self.system
        if s.tenants is None or req.tenant not in s.tenants.tenants:
            raise APIError(f"No tenant '{quote(req.tenant)}' (GET /v1/learning/tenants lists them).", 404,
                           param="tenant", code="tenant_not_found")
        if req.action != "rollback":
            raise APIError(f"Action '{quote(req.action)}' acts on the whole server; only 'rollback' takes a tenant.",
                           400, param="action", code="invalid_action")
        try:
            served = await s.tenants.tenants[req.tenant].learner.serve(req.version, reason="operator rollback")
        except ValueError as exc:  # an unknown version, or nothing to roll back to
            raise APIError(f"{exc}.", 400, param="version", code="invalid_version") from exc
        s.metrics.control_actions.labels(action="rollback").inc()
        return ControlResponse(action="rollback", message=f"Rolled back tenant {req.tenant}: weight version {served} "
                               "serves its model from the next engine step.", status=s.health_status(),
                               learning_enabled=s.state.enabled, paused=s.state.paused)

    # -- helpers -----------------------------------------------------------------------------------------------

    async def _store_examples(self, examples: list[ManualLearningRequest]) -> list[InteractionAck]:
        s = self.system
        self._require_enabled()
        tenants = [self._tenant_of(e.model) for e in examples]
        records = [supplied_interaction(e.prompt, e.response, e.performance_feedback, e.interaction_type,
                                        s.weight_version, e.model or s.model_name, tenant)
                   for e, tenant in zip(examples, tenants)]
        stored: list[Interaction] = await self._guard(s.collector.add_examples(records))
        return [InteractionAck(id=i.id, created=int(i.created), interaction_type=i.interaction_type,
                               quality_score=i.quality_score or 0.0, eligible=self._eligible(i.quality_score))
                for i in stored]

    def _tenant_of(self, model: str | None) -> str | None:
        """The tenant a supplied example teaches (None: the base model's lineage); 404 for a model not served."""
        s = self.system
        if model is None or model == s.model_name:
            return None
        base, sep, tenant = model.partition(":")
        if sep and base == s.model_name and s.tenants is not None:
            try:
                s.tenants.lineage(tenant)
                return tenant
            except (ValueError, LookupError):
                pass
        raise APIError(f"The model `{quote(model)}` is neither the served model nor a tenant's (<model>:<tenant>, "
                       "GET /v1/models lists them).", 404, param="model", code="model_not_found")

    def _require_enabled(self) -> None:
        if not self.system.state.enabled:
            raise APIError('Continuous learning is disabled; POST /v1/learning/control with {"action": "enable"} '
                           "to turn it back on.", 409, code="learning_disabled")

    def _eligible(self, score: float | None) -> bool:
        return score is not None and score >= self.system.config.interaction_quality_threshold

    async def _guard(self, work: Awaitable[T]) -> T:
        """Await store work; a store failure becomes a 503 the client can retry (details go to the log)."""
        try:
            return await work
        except (StoreError, sqlite3.Error, RuntimeError) as exc:
            logger.error("learning store operation failed: %s: %s", type(exc).__name__, exc)
            self.system.metrics.store_errors.inc()  # health reports the store's state (not the failure window)
            raise APIError("The learning store is unavailable; the request was not recorded. Retry later.", 503,
                           code="learning_store_unavailable") from exc


def _may_rate(caller: Principal | None, interaction: Interaction) -> bool:
    """The admin may rate anything; anyone else only responses served to the same key (no key: to no key).
    Without an auth layer (``caller`` None) there are no identities to compare."""
    if caller is None or caller.role == "admin":
        return True
    return interaction.api_key_hash == caller.identity


def _without_paths(config: dict[str, Any]) -> dict[str, Any]:
    """The config as clients may see it: a directory or file setting shows its last component only."""
    return {k: os.path.basename(os.path.normpath(v)) if isinstance(v, str) and k.endswith(("_dir", "_path", "_file"))
            else v for k, v in config.items()}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None

"""``OpenAIServingLearningViews``: the operator's views of learning (timeline, curves, interactions) and the
download of a version's PEFT adapter. The console page and ``aphrodite learning`` read these routes."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from typing import Any

from aphrodite.continuous_learning.interaction import Interaction
from aphrodite.continuous_learning.learner.versions import CONFIG, MANIFEST, WEIGHTS
from aphrodite.continuous_learning.store.base import TrainingSignal
from aphrodite.continuous_learning.system import ContinuousLearningSystem
from aphrodite.endpoints.openai.errors import APIError
from aphrodite.endpoints.openai.learning_views_protocol import (FeedbackBucket, FeedbackSummary, InteractionList,
                                                                InteractionSummary, LearningCurves, TimelineEvent,
                                                                TimelineList, VersionCurvePoint)

TEXT_CHARS = 2_000
"""Longest prompt or response text in an interaction summary."""


class OpenAIServingLearningViews:
    """Read-only views built from the learner's manifests and timeline and from the store."""

    def __init__(self, system: ContinuousLearningSystem) -> None:
        self.system = system

    def timeline(self, limit: int) -> TimelineList:
        learner = self.system.learner
        events = learner.timeline.events(limit) if learner is not None else []
        return TimelineList(data=[TimelineEvent.model_validate(e) for e in events])

    async def curves(self, window_s: float, buckets: int) -> LearningCurves:
        s = self.system
        rows = await asyncio.to_thread(s.learner.list_versions) if s.learner is not None else []
        points = [_curve_point(r) for r in rows if not r.get("base")]
        since, bucket_s = time.time() - window_s, window_s / buckets
        series = await self._store(lambda: s.store.feedback_series(since, bucket_s))
        return LearningCurves(versions=points, since=since, bucket_s=bucket_s,
                              feedback=[FeedbackBucket(start=t, count=n, mean_rating=m) for t, n, m in series])

    async def interactions(self, limit: int) -> InteractionList:
        store = self.system.store
        signals = await self._store(lambda: store.recent_interactions(limit))
        return InteractionList(data=[_summary(sig) for sig in signals])

    async def adapter_tar(self, version: int) -> bytes:
        """Version ``version``'s adapter directory (config, weights, manifest) as an uncompressed tar."""
        learner = self.system.learner
        if version == 0:
            raise APIError("Version 0 is the base weights: it has no adapter.", 404, param="version",
                           code="version_not_found")
        if learner is None or version not in await asyncio.to_thread(learner.versions.versions):
            kept = learner.kept() if learner is not None else [0]
            raise APIError(f"Weight version {version} is not kept (kept: {kept}).", 404, param="version",
                           code="version_not_found")
        return await asyncio.to_thread(_tar_dir, learner.versions.path(version), f"v{version}")

    async def _store(self, read: Any) -> Any:
        try:
            return await self.system.collector.writer.call(read)
        except NotImplementedError as exc:
            raise APIError("This learning store does not provide this view.", 501, code="not_implemented") from exc


def _curve_point(row: dict[str, Any]) -> VersionCurvePoint:
    gate = row.get("gate") or {}
    target, held = gate.get("target") or {}, gate.get("heldout") or {}
    return VersionCurvePoint(version=row["version"], created=row.get("created"),
                             target_before=target.get("heldout_before", target.get("train_before")),
                             target_after=target.get("heldout_after", target.get("train_after")),
                             heldout_nll=held.get("candidate_nll"), heldout_base_nll=held.get("base_nll"))


def _summary(signal: TrainingSignal) -> InteractionSummary:
    i, fb = signal.interaction, signal.feedback
    return InteractionSummary(
        id=i.id, created=i.created, interaction_type=i.interaction_type, endpoint=i.endpoint,
        prompt=_prompt_text(i)[:TEXT_CHARS], response=(i.choices[0].text if i.choices else "")[:TEXT_CHARS],
        weight_version=i.weight_version, quality_score=i.quality_score, user_satisfaction=i.user_satisfaction,
        feedback=None if fb is None else FeedbackSummary(
            user_satisfaction=fb.user_satisfaction, created=fb.created, comment=fb.comment,
            corrected_response=fb.corrected_response[:TEXT_CHARS] if fb.corrected_response else None))


def _prompt_text(i: Interaction) -> str:
    if i.prompt is not None:
        return i.prompt
    users = [m.get("content") for m in i.messages or [] if m.get("role") == "user"]
    last = users[-1] if users else ""
    return last if isinstance(last, str) else str(last)


def _tar_dir(path: Any, name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for file in (CONFIG, WEIGHTS, MANIFEST):
            tar.add(path / file, arcname=f"{name}/{file}")
    return buf.getvalue()

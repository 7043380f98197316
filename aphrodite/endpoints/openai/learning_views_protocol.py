"""Pydantic models of the operator's read-only views of learning: versions, timeline, curves, interactions.

They type these routes in the OpenAPI schema (``/docs``); the console page and ``aphrodite learning`` read them.
Version and timeline entries allow extra fields, so what other parts of the learner add to a manifest or an
event (a ``canary`` object, for one) reaches clients unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class VersionInfo(BaseModel):
    """One kept weight version with its manifest summary."""

    model_config = ConfigDict(extra="allow")

    version: int
    parent: int | None = None
    """The version it was trained from (None for the base weights)."""
    serving: bool
    base: bool = False
    """True for version 0, the base weights."""
    created: float | None = None
    """When it was saved (unix seconds)."""
    signals: dict[str, int] = Field(default_factory=dict)
    """Training signals it learned from, by the signal-policy rule that admitted them."""
    interactions: int = 0
    """Interactions it learned from."""
    forgotten_interactions: int = 0
    """Of those, interactions deleted since (the weights cannot unlearn them)."""
    gate: dict[str, Any] = Field(default_factory=dict)
    """The gate's report: ``target``, ``protected_facts``, ``heldout`` (each with ``passed``)."""
    path: str | None = None
    """Its PEFT adapter directory, relative to the learning dir."""


class VersionList(BaseModel):
    """GET /v1/learning/versions."""

    object: Literal["list"] = "list"
    data: list[VersionInfo]
    serving: int
    """The version serving now."""


class TimelineEvent(BaseModel):
    """One step of the versions' lineage."""

    model_config = ConfigDict(extra="allow")

    time: float
    kind: str
    """``promoted``, ``refused`` or ``served`` (a rollback, a reset or a restore)."""
    version: int | None = None
    """The version promoted or served (None for a refused candidate)."""
    parent: int | None = None
    """The version a candidate was trained from."""
    previous: int | None = None
    """For ``served``: the version that served before."""
    reason: str | None = None
    """Why: the gate's verdict, or what asked for the rollback."""


class TimelineList(BaseModel):
    """GET /v1/learning/timeline: the newest events, oldest first."""

    object: Literal["list"] = "list"
    data: list[TimelineEvent]


class VersionCurvePoint(BaseModel):
    """One promoted version's losses as the gate measured them (mean negative log-likelihood, nats/token)."""

    version: int
    created: float | None = None
    target_before: float | None = None
    """Loss of the parent on the examples taught."""
    target_after: float | None = None
    """Loss of this version on the examples taught."""
    heldout_nll: float | None = None
    """Loss of this version on the held-out text."""
    heldout_base_nll: float | None = None
    """Loss of the base weights on the held-out text."""


class FeedbackBucket(BaseModel):
    """User feedback received in one time bucket."""

    start: float
    count: int
    mean_rating: float
    """Mean ``user_satisfaction`` in [-1, 1]."""


class LearningCurves(BaseModel):
    """GET /v1/learning/curves."""

    object: Literal["learning.curves"] = "learning.curves"
    versions: list[VersionCurvePoint]
    """Kept versions, oldest first."""
    since: float
    bucket_s: float
    feedback: list[FeedbackBucket]
    """Buckets with feedback since ``since``, oldest first (empty buckets left out)."""


class FeedbackSummary(BaseModel):
    """The latest user feedback on an interaction."""

    user_satisfaction: float
    corrected_response: str | None = None
    comment: str | None = None
    created: float


class InteractionSummary(BaseModel):
    """A stored interaction as the store keeps it (PII already redacted), texts cut to 2,000 characters."""

    id: str
    created: float
    interaction_type: str
    endpoint: str
    prompt: str
    """The prompt, or the chat's last user message."""
    response: str
    """The first choice's text."""
    weight_version: int
    quality_score: float | None = None
    user_satisfaction: float | None = None
    feedback: FeedbackSummary | None = None


class InteractionList(BaseModel):
    """GET /v1/learning/interactions: the newest interactions, newest first."""

    object: Literal["list"] = "list"
    data: list[InteractionSummary]

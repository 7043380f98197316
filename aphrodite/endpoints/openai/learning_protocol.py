"""Pydantic models of the /v1/learning API.

Request bodies reject unknown fields (a misspelt ``performance_feedbak`` would otherwise be silently dropped
and the example stored without its score); validation failures become 4xx errors in the OpenAI shape.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aphrodite.endpoints.openai.protocol import check_encodable

MAX_TEXT_CHARS = 1_000_000
"""Longest prompt, response or correction accepted (characters)."""
MAX_BATCH = 1_000
"""Most interactions in one POST /v1/learning/learn."""


class LearningRequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    _check_text = field_validator("*")(check_encodable)


class ManualLearningRequest(LearningRequestModel):
    """A prompt and a response to learn from, with how good the response is."""

    prompt: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    response: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    performance_feedback: float = Field(ge=0.0, le=1.0)
    """How good the response is, in [0, 1]."""
    interaction_type: str = Field("manual", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    """A label such as ``high_quality_example``."""
    model: str | None = Field(None, min_length=1, max_length=256)
    """The model the example teaches: the served model (default) or a tenant's ``<model>:<tenant>`` (per-tenant
    adapters), whose adapter alone learns it."""


class LearnRequest(LearningRequestModel):
    """A batch of interactions with feedback."""

    interactions: list[ManualLearningRequest] = Field(min_length=1, max_length=MAX_BATCH)


class FeedbackRequest(LearningRequestModel):
    """A user's verdict on an earlier completion or chat response."""

    response_id: str = Field(min_length=1, max_length=256)
    """The ``id`` of the completion or chat response (``cmpl-...``, ``chatcmpl-...``)."""
    user_satisfaction: float = Field(ge=-1.0, le=1.0)
    """-1 (bad) to 1 (good)."""
    corrected_response: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS)
    """What the response should have been."""
    comment: str | None = Field(None, max_length=10_000)


class ControlRequest(LearningRequestModel):
    """An operator action; GET /v1/learning/config lists the accepted ones."""

    action: str = Field(min_length=1, max_length=64)
    version: int | None = Field(None, ge=0)
    """For ``rollback``: the kept weight version to serve (GET /v1/learning/versions lists them)."""
    tenant: str | None = Field(None, min_length=1, max_length=63)
    """For ``rollback``: act on this tenant's lineage (per-tenant adapters; GET /v1/learning/tenants lists its
    versions) instead of the base model's."""


class InteractionAck(BaseModel):
    """A stored (committed) interaction."""

    id: str
    object: Literal["learning.interaction"] = "learning.interaction"
    created: int = Field(default_factory=lambda: int(time.time()))
    interaction_type: str
    quality_score: float
    eligible: bool
    """Whether the score reaches ``interaction_quality_threshold``."""
    stored: bool = True


class LearnResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[InteractionAck]
    stored: int
    eligible: int


class FeedbackResponse(BaseModel):
    """A stored (committed) feedback and the response's new score."""

    id: str
    object: Literal["learning.feedback"] = "learning.feedback"
    created: int
    response_id: str
    user_satisfaction: float
    quality_score: float
    eligible: bool


class InteractionDeleted(BaseModel):
    """DELETE /v1/learning/interactions/{id}: the interaction and its feedback are gone from the store."""

    id: str
    object: Literal["learning.interaction.deleted"] = "learning.interaction.deleted"
    deleted: bool = True


class ControlResponse(BaseModel):
    object: Literal["learning.control"] = "learning.control"
    action: str
    message: str
    status: str
    learning_enabled: bool
    paused: bool


class CreateTenantRequest(LearningRequestModel):
    """``POST /v1/learning/tenants``: create a tenant (per-tenant adapters)."""

    name: str = Field(min_length=1, max_length=63)
    """1 to 63 lowercase letters, digits, ``_`` or ``-``; requests name its model ``<model>:<name>``."""

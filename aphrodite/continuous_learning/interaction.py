"""The records continuous learning keeps: one ``Interaction`` per served response, and ``InteractionFeedback``.

Records are compact (slots) because up to ``max_interaction_buffer`` of them live in memory at once; token
ids stay in memory only until the store has them.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aphrodite.common.observers import FinishedRequest


# Overheads (bytes) of the parts of an Interaction, measured with tracemalloc on CPython 3.11 (the object and
# its buffer entry, sampling params, timestamps; a choice and its text; a chat message dict and its text).
_BASE_BYTES, _STR_BYTES, _CHOICE_BYTES, _MESSAGE_BYTES = 630, 50, 180, 280
_TOKEN_BYTES = 36
"""A token id in a Python list: the pointer and the int object."""


@dataclass(slots=True)
class Choice:
    """One generated choice of a response."""

    text: str
    token_ids: Sequence[int] = field(default_factory=list)
    """Generated token ids; emptied in memory once written to the store (which keeps them)."""
    finish_reason: str | None = None
    """``stop``, ``length``, ``abort``... or None when unknown (manual examples)."""


@dataclass(slots=True)
class Interaction:
    """One served (or manually supplied) prompt and response, with what is known about its quality."""

    id: str
    """The response id the client saw (``cmpl-...``, ``chatcmpl-...``), or ``manual-...`` for supplied ones."""
    endpoint: str
    """``/v1/completions``, ``/v1/chat/completions``, or ``/v1/learning/manual`` for supplied examples."""
    choices: list[Choice]
    prompt: str | None = None
    """The prompt text (completions and supplied examples)."""
    messages: list[dict[str, Any]] | None = None
    """The chat messages as sent (chat); the rendered prompt is not kept twice."""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    total_ms: float | None = None
    weight_version: int = 0
    """The engine weight version that produced the response's first token (0 = base model)."""
    weight_versions: list[int] = field(default_factory=list)
    """Every weight version that produced one of the response's tokens (more than one if it straddled a swap)."""
    sampling_params: dict[str, Any] = field(default_factory=dict)
    api_key_hash: str | None = None
    """The caller's keyed identity (HMAC-SHA256 of its key with the installation secret); None without keys."""
    status_code: int | None = 200
    error: str | None = None
    interaction_type: str = "api"
    """``api`` for captured traffic, or the type given with a supplied example."""
    created: float = field(default_factory=time.time)
    performance_feedback: float | None = None
    """Explicit score in [0, 1] given with a supplied example."""
    user_satisfaction: float | None = None
    """Latest user feedback on this response, in [-1, 1]."""
    quality_score: float | None = None
    """Score in [0, 1] from the quality scorer; None until scored."""
    model_confidence: float | None = None
    """The model's own confidence in the first choice: the geometric mean probability of its sampled tokens,
    exp(mean log-probability), in (0, 1]; None when unknown (supplied examples)."""
    tenant: str | None = None
    """The tenant whose adapter served it, or who supplied it (per-tenant adapters); None: the base model's."""
    hidden_states: Any = None
    """The first choice's projected hidden states, a (T, d) tensor, from capture until the store writer has
    run them through the quality predictor; never stored, never kept longer."""

    @property
    def completion(self) -> str:
        """Text of the first choice."""
        return self.choices[0].text if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        """Finish reason of the first choice."""
        return self.choices[0].finish_reason if self.choices else None

    def approx_bytes(self) -> int:
        """A cheap estimate of the memory this record holds once written (token ids released), for reports."""
        size = _BASE_BYTES + len(self.id) + (len(self.prompt) + _STR_BYTES if self.prompt else 0)
        size += sum(_CHOICE_BYTES + len(c.text) for c in self.choices)
        if self.messages:
            size += sum(_MESSAGE_BYTES + len(str(m.get("content", ""))) for m in self.messages)
        return size

    def pending_bytes(self) -> int:
        """An estimate of the memory this record holds until the store writer has it: ``approx_bytes`` plus its
        token ids and hidden states."""
        size = self.approx_bytes() + sum(_TOKEN_BYTES * len(c.token_ids) for c in self.choices)
        states = self.hidden_states
        if states is not None and hasattr(states, "element_size"):
            size += states.element_size() * states.nelement()
        return size


@dataclass(slots=True)
class InteractionFeedback:
    """Feedback on one request: request-level monitoring (latency, status) and/or the user's satisfaction."""

    request_id: str
    endpoint: str
    method: str
    response_time_ms: float
    status_code: int
    user_satisfaction: float | None = None
    """In [-1, 1]; None for monitoring records without user feedback."""
    error_occurred: bool = False
    model_confidence: float | None = None
    """In [0, 1] when a confidence estimate is available."""
    timestamp: float = field(default_factory=time.time)
    metadata: dict[str, Any] = field(default_factory=dict)


def interaction_from_finished(req: FinishedRequest, keep_hidden_states: bool = False) -> Interaction:
    """Convert what the serving layer reports about a finished request. Cheap: runs on the event loop.
    With ``keep_hidden_states`` the first choice's hidden states ride along to the writer (the scorer judges
    the first choice only)."""
    token_ids, reasons = req.completion_token_ids, req.finish_reasons
    choices = [Choice(text, token_ids[i] if i < len(token_ids) else [], reasons[i] if i < len(reasons) else None)
               for i, text in enumerate(req.completion_texts)]
    return Interaction(
        id=req.response_id, endpoint=req.endpoint, choices=choices,
        prompt=None if req.messages is not None else req.prompt, messages=req.messages, model=req.model,
        prompt_tokens=req.prompt_tokens, completion_tokens=req.completion_tokens,
        ttft_ms=None if req.ttft_s is None else req.ttft_s * 1000.0, total_ms=req.total_s * 1000.0,
        weight_version=req.weight_version, weight_versions=list(req.weight_versions) or [req.weight_version],
        sampling_params=req.sampling_params, api_key_hash=req.api_key_hash,
        status_code=req.status_code, error=req.error, created=req.created,
        model_confidence=_confidence(req.mean_logprobs), tenant=req.tenant,
        hidden_states=req.hidden_states[0] if keep_hidden_states and req.hidden_states else None)


def _confidence(mean_logprobs: list[float | None] | None) -> float | None:
    first = mean_logprobs[0] if mean_logprobs else None
    return None if first is None else math.exp(first)


def supplied_interaction(prompt: str, response: str, performance_feedback: float, interaction_type: str,
                         weight_version: int, model: str, tenant: str | None = None) -> Interaction:
    """An example supplied through the learning API (manual or batch), with its explicit score; ``tenant``:
    the tenant whose adapter it teaches (None: the base model's lineage)."""
    return Interaction(
        id=f"manual-{uuid.uuid4().hex}", endpoint="/v1/learning/manual", choices=[Choice(response)],
        prompt=prompt, model=model, weight_version=weight_version, status_code=None,
        interaction_type=interaction_type, performance_feedback=performance_feedback, tenant=tenant)

"""The serving layer's one outward seam: observers told about every finished API request.

The OpenAI handlers build a ``FinishedRequest`` when a completion or chat request ends (streamed or not,
successful or not) and hand it to each registered ``RequestObserver``. Observers must return at once
(queue the record, never do I/O inline): they run on the event loop in the request path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class FinishedRequest:
    """What the server knows about one finished completion or chat request."""

    response_id: str
    """The id the client saw (``cmpl-...`` or ``chatcmpl-...``)."""
    endpoint: str
    """``/v1/completions`` or ``/v1/chat/completions``."""
    model: str
    """The model name the request was served as (the base model, a loaded adapter, ``<base>:<tenant>``)."""
    prompt: str | None
    """The prompt text (completions) or the rendered chat prompt (chat)."""
    messages: list[dict[str, Any]] | None
    """The chat messages as sent, None for completions."""
    completion_texts: list[str]
    """One text per choice."""
    completion_token_ids: list[list[int]]
    finish_reasons: list[str | None]
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    total_s: float
    weight_version: int
    """The weight version that produced the first token (as in the ``x-aphrodite-weight-version`` header)."""
    sampling_params: dict[str, Any]
    stream: bool
    status_code: int = 200
    error: str | None = None
    api_key_hash: str | None = None
    """The caller's keyed identity (HMAC-SHA256 of its key with the installation secret), never the key; None
    when the server has no keys."""
    mean_logprobs: list[float | None] | None = None
    """Per choice, the mean log-probability of its sampled tokens (None for a choice with no tokens)."""
    hidden_states: list[Any] | None = None
    """Per choice, projected final hidden states of the generated tokens, when the engine was asked for them."""
    created: float = field(default_factory=time.time)
    weight_versions: list[int] = field(default_factory=list)
    """Every weight version that produced one of the response's tokens (a response can straddle a swap)."""
    tenant: str | None = None
    """The tenant whose adapter served the request (``<base>:<tenant>`` models); None for the base model."""


class RequestObserver(Protocol):
    """Anything that wants to hear about finished requests.

    An observer with a true ``wants_hidden_states`` attribute makes the serving layer ask the engine for each
    generated token's projected final hidden state; they arrive in ``FinishedRequest.hidden_states``.
    """

    def on_request_finished(self, request: FinishedRequest) -> None:
        """Called on the event loop; must not block."""
        ...

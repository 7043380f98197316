"""What the engine hands back each step, and the per-token bookkeeping that produces it.

Token processing (append, detokenize, check stop conditions) lives here so the engine step reads as
schedule -> execute -> process outputs -> safe point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from aphrodite.engine.sequence import Sequence, TopLogprobs


@dataclass
class CompletionOutput:
    """One sequence's output so far."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float
    """Sum of the sampled tokens' log-probabilities (always tracked)."""
    logprobs: list[TopLogprobs] | None
    sampled_logprobs: list[float] | None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    hidden_states: torch.Tensor | None = None
    """(T, d) projected final hidden states of the generated tokens, when asked for; set when finished."""


@dataclass
class RequestMetrics:
    """Wall-clock (monotonic) timestamps of a request's life."""

    arrival_time: float
    first_token_time: float | None
    last_token_time: float | None
    finished_time: float | None = None


@dataclass
class RequestOutput:
    """A request's state after a step; ``finished`` marks the last one."""

    request_id: str
    prompt_token_ids: list[int]
    prompt_logprobs: list[TopLogprobs | None] | None
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
    weight_version: int
    """The weight version that produced the first token (the serving one, before any token)."""
    weight_versions: list[int]
    """Every weight version that produced one of its tokens so far."""


def append_token(seq: Sequence, token_id: int, logprob: float, top: TopLogprobs | None,
                 eos_ids: set[int], max_model_len: int) -> None:
    """Add a sampled token to ``seq``, extend its text, and mark it finished if a stop condition holds."""
    now = time.monotonic()
    if seq.first_token_time is None:
        seq.first_token_time = now
    seq.last_token_time = now
    seq.output_token_ids.append(token_id)
    seq.cumulative_logprob += logprob
    if seq.logprobs is not None:
        seq.sampled.append(logprob)
        seq.logprobs.append({token_id: logprob, **(top or {})})
    piece = seq.decoder.step(token_id)
    seq.output_text += piece
    params = seq.params
    if not params.ignore_eos and token_id in eos_ids:
        seq.finish_reason = "stop"
    elif token_id in params.stop_token_ids:
        seq.finish_reason, seq.stop_reason = "stop", token_id
    elif params.stop and _truncate_at_stop(seq, len(piece)):
        seq.finish_reason = "stop"
    elif params.max_tokens is not None and len(seq.output_token_ids) >= params.max_tokens:
        seq.finish_reason = "length"
    elif seq.num_tokens >= max_model_len:
        seq.finish_reason = "length"


def _truncate_at_stop(seq: Sequence, new_chars: int) -> bool:
    longest = max(len(s) for s in seq.params.stop)
    start = max(0, len(seq.output_text) - new_chars - longest + 1)
    hits = [(idx, s) for s in seq.params.stop if (idx := seq.output_text.find(s, start)) != -1]
    if not hits:
        return False
    idx, stop = min(hits)
    end = idx + len(stop) if seq.params.include_stop_str_in_output else idx
    seq.output_text = seq.output_text[:end]
    seq.stop_reason = stop
    return True


def visible_text(seq: Sequence, finished: bool) -> str:
    """The text safe to show: while running, hold back a tail that could still become a stop string."""
    if finished or not seq.params.stop:
        return seq.output_text
    hold = max(len(s) for s in seq.params.stop) - 1
    return seq.output_text[:max(0, len(seq.output_text) - hold)]


def make_output(seq: Sequence, weight_version: int) -> RequestOutput:
    """The output after a step computed by ``weight_version``."""
    finished = seq.finish_reason is not None
    hidden = torch.stack(seq.hidden_states) if finished and seq.hidden_states else None
    out = CompletionOutput(
        index=0, text=visible_text(seq, finished), token_ids=list(seq.output_token_ids),
        cumulative_logprob=seq.cumulative_logprob,
        logprobs=list(seq.logprobs) if seq.logprobs is not None else None,
        sampled_logprobs=list(seq.sampled) if seq.logprobs is not None else None,
        finish_reason=seq.finish_reason, stop_reason=seq.stop_reason, hidden_states=hidden)
    metrics = RequestMetrics(seq.arrival_time, seq.first_token_time, seq.last_token_time,
                             time.monotonic() if finished else None)
    first = seq.first_token_version if seq.first_token_version is not None else weight_version
    return RequestOutput(seq.request_id, seq.prompt_token_ids, seq.prompt_logprobs, [out], finished,
                         metrics, first, list(seq.weight_versions) or [weight_version])

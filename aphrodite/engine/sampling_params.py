"""Per-request sampling parameters, validated up front so a bad value is a 400, not a crash mid-batch."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_N = 16
MAX_LOGPROBS = 20


@dataclass
class SamplingParams:
    """How to sample one request's continuation."""

    n: int = 1
    """Number of completions to return (at most 16); the serving layer fans them out as separate sequences."""
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    top_k: int = -1
    """-1 or 0 disables top-k."""
    max_tokens: int | None = 16
    """None fills the rest of the context window; 0 only scores the prompt (with prompt_logprobs)."""
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None
    """Top-N log-probabilities per generated token (None: none; 0: the sampled token's only)."""
    prompt_logprobs: int | None = None
    """Top-N log-probabilities per prompt token."""
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    return_hidden_states: bool = False
    """Return each generated token's final hidden state, projected to the engine's hidden-state size."""
    routing_key: str | None = None
    """Sticky key for splitting new requests between weight versions (a canary): the request's ``user`` when it
    names one; requests with the same key get the same version while a split holds. None: the request id."""
    adapter: str | None = None
    """A named lineage of weight versions to run on (``WeightVersions.name``: a loaded adapter, a tenant); None:
    the served model's version."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        checks = [
            (1 <= self.n <= MAX_N, "n", f"n must be between 1 and {MAX_N}"),
            (self.temperature >= 0, "temperature", "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p", "top_p must be in (0, 1]"),
            (self.top_k == -1 or self.top_k >= 0, "top_k", "top_k must be -1 (disabled) or >= 0"),
            (self.max_tokens is None or self.max_tokens >= 0, "max_tokens", "max_tokens must be >= 0"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty", "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty", "frequency_penalty must be in [-2, 2]"),
            (0 < self.repetition_penalty <= 2, "repetition_penalty", "repetition_penalty must be in (0, 2]"),
            (self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS, "logprobs",
             f"logprobs must be between 0 and {MAX_LOGPROBS}"),
            (self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= MAX_LOGPROBS, "prompt_logprobs",
             f"prompt_logprobs must be between 0 and {MAX_LOGPROBS}"),
            (all(s for s in self.stop), "stop", "stop strings must not be empty"),
        ]
        for ok, param, message in checks:
            if not ok:
                raise SamplingParamsError(message, param)

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5

    @property
    def needs_penalties(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0)


class SamplingParamsError(ValueError):
    """A sampling parameter out of range; ``param`` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param

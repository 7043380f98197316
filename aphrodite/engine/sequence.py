"""One sequence being generated: its tokens, its cache blocks and its progress."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from aphrodite.engine.sampling_params import SamplingParams
from aphrodite.modeling.tokenizer import IncrementalDecoder

TopLogprobs = dict[int, float]


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """A request's state inside the engine (one sequence per request; n > 1 fans out above the engine)."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    decoder: IncrementalDecoder
    arrival_time: float = field(default_factory=time.monotonic)
    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    output_text: str = ""
    logprobs: list[TopLogprobs] | None = None
    sampled: list[float] = field(default_factory=list)
    """Log-probability of each sampled token (when logprobs were asked for)."""
    prompt_logprobs: list[TopLogprobs | None] | None = None
    cumulative_logprob: float = 0.0
    hidden_states: list[torch.Tensor] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    num_preemptions: int = 0
    generator: torch.Generator | None = None
    first_token_version: int | None = None
    """The weight version that produced the first output token."""
    weight_versions: list[int] = field(default_factory=list)
    """Every weight version that produced one of its tokens, in order of first use."""
    weight_version: int | None = None
    """The weight version this sequence was admitted with (set by the engine when it is first scheduled, from
    ``WeightVersions.version``); every token of it is computed by this version, to its end."""
    # -- prefix caching and chunked prefill (issue 10, "prefix") --
    num_computed_tokens: int = 0
    """Leading tokens whose keys and values are in the cache (cached prefix + prefill chunks + decoded)."""
    block_hashes: list[bytes] | None = field(default_factory=list)
    """Prefix hash of each full computed block, in order; None once a step ran under another weight version
    than ``weight_version`` (its later blocks are then never shared)."""

    def __post_init__(self) -> None:
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)
        if self.params.logprobs is not None:
            self.logprobs = []
        if self.params.return_hidden_states:
            self.hidden_states = []

    def saw_version(self, version: int) -> None:
        """Record that ``version`` computed this step's token."""
        if self.first_token_version is None:
            self.first_token_version = version
        if version not in self.weight_versions:
            self.weight_versions.append(version)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def last_token_id(self) -> int:
        return self.output_token_ids[-1] if self.output_token_ids else self.prompt_token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    @property
    def wants_prompt_logprobs(self) -> bool:
        return self.params.prompt_logprobs is not None and self.prompt_logprobs is None

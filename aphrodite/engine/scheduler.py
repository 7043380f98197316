"""Continuous batching: which sequences run in the next step, and how many of their tokens.

Each step is either a prefill batch or a decode batch. A prefill batch computes, for each row, the next
tokens of a sequence whose prompt is not in the cache yet: new sequences are admitted while the sequence limit,
the token budget and free KV blocks allow, and a cached prefix (see ``block_manager``) is skipped. A decode batch
feeds every running sequence whose prompt is fully computed its last token, one token each.

Without chunked prefill a prompt is computed in one step and prefills always go first (vLLM v0's default
policy), so a long prompt stalls every running decode for its whole prefill. With chunked prefill a prompt is
computed in chunks that fit the token budget, and prefill and decode steps alternate while both have work, so
a running decode waits for at most one chunk between its tokens. (vLLM v1 puts decode rows and a chunk into one
step; here they stay separate batches because a mixed batch would pad every decode row to the chunk's length;
docs/benchmarks.md has the measurement.) When the cache runs out during decode, the newest running sequence is
preempted: its blocks are freed and it goes back to the front of the queue to be recomputed later (its
cached blocks usually make that cheap). Nothing crashes and nothing is dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from aphrodite.engine.block_manager import BlockManager
from aphrodite.engine.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerConfig:
    """Limits on a step's batch."""

    max_num_seqs: int = 64
    """Most sequences in the running batch."""
    max_num_batched_tokens: int = 512
    """Most prompt tokens in one prefill step, counted padded (rows x the longest row). With chunked prefill a
    longer prompt is computed in chunks of at most this many tokens; without it the engine raises this to
    max_model_len so every prompt fits one step."""
    # -- chunked prefill (issue 10, "prefix") --
    enable_chunked_prefill: bool = True
    """Compute long prompts in chunks of at most max_num_batched_tokens and alternate prefill and decode steps,
    so running requests keep producing tokens while a long prompt is prefilled. Requests asking for prompt
    log-probabilities are never chunked."""

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be positive")


@dataclass
class SchedulerOutput:
    """The sequences to run this step and how."""

    seqs: list[Sequence]
    is_prefill: bool
    num_new_tokens: list[int] = field(default_factory=list)
    """Tokens each row computes this step, from its ``num_computed_tokens`` on (1 per decode row)."""

    @property
    def is_empty(self) -> bool:
        return not self.seqs


def is_decoding(seq: Sequence) -> bool:
    """Everything but the last token is in the cache: the next step feeds that token and samples."""
    return seq.num_computed_tokens == seq.num_tokens - 1


class Scheduler:
    """Owns the waiting queue and the running batch."""

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.blocks = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._last_was_prefill = False
        self.admit: Callable[[Sequence], bool] = lambda seq: True
        """Called before a waiting sequence is admitted; False makes it (and those behind it) wait. The engine
        pins the sequence to its weight version here (``WeightVersions.admit``)."""

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self, version: int = 0) -> SchedulerOutput:
        """The next batch; ``version`` is the weight version serving now (given to newly admitted sequences)."""
        if self.config.enable_chunked_prefill and self._last_was_prefill:
            decode = self._schedule_decode()
            if decode.seqs:
                self._last_was_prefill = False
                return decode
        prefill = self._schedule_prefill(version)
        self._last_was_prefill = bool(prefill.seqs)
        return prefill if prefill.seqs else self._schedule_decode()

    def _chunk(self, seq: Sequence, rows: int, longest: int) -> int:
        """Tokens ``seq`` may compute as row ``rows`` of a prefill batch whose longest row so far is ``longest``
        (0 if it may not join)."""
        budget = self.config.max_num_batched_tokens
        remaining = seq.num_tokens - seq.num_computed_tokens
        if self.config.enable_chunked_prefill and not seq.wants_prompt_logprobs:
            remaining = min(remaining, budget // (rows + 1))
        if rows and max(longest, remaining) * (rows + 1) > budget:
            return 0
        return max(remaining, 0)

    def _schedule_prefill(self, version: int) -> SchedulerOutput:
        out = SchedulerOutput([], is_prefill=True)
        longest = 0
        for seq in self.running:  # prompts part-way through a chunked prefill
            if seq.num_computed_tokens >= seq.num_tokens - 1:
                continue
            n = self._chunk(seq, len(out.seqs), longest)
            if not n:
                return out
            out.seqs.append(seq)
            out.num_new_tokens.append(n)
            longest = max(longest, n)
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            if not self.admit(seq):  # pins the sequence to its weight version (the prefix lookup is keyed by it)
                break
            if seq.weight_version is None:  # a scheduler without an engine: the version serving now
                seq.weight_version = version
            n = self.blocks.allocate(seq) and self._chunk(seq, len(out.seqs), longest)
            if not n:
                if seq.block_table:
                    self.blocks.free(seq)
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.seqs.append(seq)
            out.num_new_tokens.append(n)
            longest = max(longest, n)
        return out

    def _schedule_decode(self) -> SchedulerOutput:
        out = SchedulerOutput([], is_prefill=False)
        queue = list(self.running)  # oldest first
        while queue:
            seq = queue.pop(0)
            if not is_decoding(seq):
                continue  # still prefilling: it gets its next chunk in a prefill step
            while not self.blocks.can_append(seq):
                victim = queue.pop() if queue else seq
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self.blocks.append_slot(seq)
                out.seqs.append(seq)
                out.num_new_tokens.append(1)
        return out

    def update(self, out: SchedulerOutput, version: int) -> None:
        """After the step ran: the rows' new tokens are in the cache, computed by each sequence's own pinned
        version (``version``, the one serving now, only for a sequence that was never pinned)."""
        for seq, n in zip(out.seqs, out.num_new_tokens):
            pinned = seq.weight_version if seq.weight_version is not None else version
            self.blocks.commit(seq, seq.num_computed_tokens + n, pinned)

    def _preempt(self, seq: Sequence) -> None:
        """Free a running sequence's cache and queue it first for recomputation."""
        self.blocks.free(seq)
        self.running.remove(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence) -> None:
        """Release a finished or aborted sequence's resources at once."""
        if seq.status == SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status == SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.blocks.free(seq)
        seq.status = SequenceStatus.FINISHED

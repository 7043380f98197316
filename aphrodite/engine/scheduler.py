"""Continuous batching: which sequences run in the next step.

Each step is either a prefill batch (new or preempted sequences, admitted while the sequence limit, the
token budget and free KV blocks allow) or a decode batch (every running sequence, one token each).
Prefills go first, as in vLLM v0's default policy, so new requests join the running batch at the next step.
When the cache runs out during decode, the newest running sequence is preempted: its blocks are freed and it
goes back to the front of the queue to be recomputed later. Nothing crashes and nothing is dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

from aphrodite.engine.block_manager import BlockManager
from aphrodite.engine.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerConfig:
    """Limits on a step's batch."""

    max_num_seqs: int = 64
    """Most sequences in the running batch."""
    max_num_batched_tokens: int = 4096
    """Most (padded) prompt tokens in one prefill step."""


@dataclass
class SchedulerOutput:
    """The sequences to run this step and how."""

    seqs: list[Sequence]
    is_prefill: bool

    @property
    def is_empty(self) -> bool:
        return not self.seqs


class Scheduler:
    """Owns the waiting queue and the running batch."""

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.blocks = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.admit: Callable[[Sequence], bool] = lambda seq: True
        """Called before a waiting sequence is admitted; False makes it (and those behind it) wait. The engine
        pins the sequence to its weight version here (``WeightVersions.admit``)."""

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        prefill = self._schedule_prefill()
        if prefill:
            return SchedulerOutput(prefill, is_prefill=True)
        return SchedulerOutput(self._schedule_decode(), is_prefill=False)

    def _schedule_prefill(self) -> list[Sequence]:
        batch: list[Sequence] = []
        longest = 0
        while self.waiting and len(self.running) + len(batch) < self.config.max_num_seqs:
            seq = self.waiting[0]
            longest_if_added = max(longest, seq.num_tokens)
            if batch and longest_if_added * (len(batch) + 1) > self.config.max_num_batched_tokens:
                break
            if not self.admit(seq):
                break
            if not self.blocks.can_allocate(seq):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq)
            seq.status = SequenceStatus.RUNNING
            batch.append(seq)
            longest = longest_if_added
        self.running.extend(batch)
        return batch

    def _schedule_decode(self) -> list[Sequence]:
        scheduled: list[Sequence] = []
        queue = list(self.running)  # oldest first
        while queue:
            seq = queue.pop(0)
            while not self.blocks.can_append(seq):
                victim = queue.pop() if queue else seq
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self.blocks.append_slot(seq)
                scheduled.append(seq)
        return scheduled

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

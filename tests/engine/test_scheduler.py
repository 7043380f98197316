"""Admission, preemption and abort in the continuous-batching scheduler."""

from __future__ import annotations

from aphrodite.engine.block_manager import BlockManager
from aphrodite.engine.sampling_params import SamplingParams
from aphrodite.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from aphrodite.engine.sequence import Sequence, SequenceStatus


def seq(rid: str, n: int) -> Sequence:
    return Sequence(rid, list(range(1, n + 1)), SamplingParams(max_tokens=100), decoder=None)


def step(sched: Scheduler) -> SchedulerOutput:
    """One engine step without a model: schedule, mark the rows computed, sample token 7 where a row ended."""
    out = sched.schedule()
    sched.update(out, 0)
    for s in out.seqs:
        if s.num_computed_tokens == s.num_tokens:
            s.output_token_ids.append(7)
    return out


def test_admission_respects_max_num_seqs_and_token_budget() -> None:
    sched = Scheduler(SchedulerConfig(max_num_seqs=3, max_num_batched_tokens=40), BlockManager(100, 4))
    for i in range(5):
        sched.add(seq(f"r{i}", 10))
    first = step(sched)
    assert first.is_prefill and [s.request_id for s in first.seqs] == ["r0", "r1", "r2"]
    # the running batch is full: the next step decodes instead of admitting more
    second = step(sched)
    assert not second.is_prefill and len(second.seqs) == 3
    sched2 = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=25), BlockManager(100, 4))
    for i in range(3):
        sched2.add(seq(f"r{i}", 10))
    assert len(sched2.schedule().seqs) == 2  # 3 x 10 padded tokens exceed the budget of 25


def test_admission_waits_for_free_blocks() -> None:
    blocks = BlockManager(num_blocks=6, block_size=4)  # 5 usable blocks, watermark 1
    sched = Scheduler(SchedulerConfig(), blocks)
    sched.add(seq("big", 12))  # 3 blocks
    sched.add(seq("next", 8))  # 2 blocks + watermark: does not fit beside "big"
    out = sched.schedule()
    assert [s.request_id for s in out.seqs] == ["big"]
    assert [s.request_id for s in sched.waiting] == ["next"]
    sched.finish(out.seqs[0])
    assert blocks.num_free_blocks == 5
    assert [s.request_id for s in sched.schedule().seqs] == ["next"]


def test_decode_preempts_newest_when_cache_is_full_and_recomputes_it_later() -> None:
    blocks = BlockManager(num_blocks=5, block_size=4)  # 4 usable blocks
    sched = Scheduler(SchedulerConfig(), blocks)
    a, b = seq("a", 4), seq("b", 3)
    sched.add(a)
    step(sched)
    sched.add(b)
    step(sched)
    assert blocks.num_free_blocks == 2
    # grow both sequences until the cache cannot hold them
    for _ in range(12):
        out = step(sched)
        if b.status == SequenceStatus.WAITING:
            break
    assert b.status == SequenceStatus.WAITING and b.num_preemptions == 1 and not b.block_table
    assert sched.waiting[0] is b and a in out.seqs and b not in out.seqs
    # once a finishes, b is admitted again with all its tokens (prompt + generated) for recomputation
    sched.finish(a)
    again = step(sched)
    assert again.is_prefill and again.seqs == [b] and len(b.block_table) == blocks.blocks_for(b.num_tokens)


def test_finish_frees_blocks_of_waiting_and_running_sequences() -> None:
    blocks = BlockManager(num_blocks=20, block_size=4)
    sched = Scheduler(SchedulerConfig(), blocks)
    running, waiting = seq("run", 9), seq("wait", 5)
    sched.add(running)
    sched.schedule()
    sched.add(waiting)
    sched.finish(running)
    sched.finish(waiting)
    assert blocks.num_free_blocks == 19 and not sched.has_unfinished()


def test_chunked_prefill_splits_a_long_prompt_and_alternates_with_decode() -> None:
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=8), BlockManager(100, 4))
    short = seq("short", 3)
    sched.add(short)
    step(sched)
    long = seq("long", 20)
    sched.add(long)
    kinds = []
    while not long.output_token_ids:
        out = step(sched)
        kinds.append((out.is_prefill, out.num_new_tokens))
    # chunks of 8, 8 and 4 tokens, each followed by a decode step for the running request
    assert kinds == [(False, [1]), (True, [8]), (False, [1]), (True, [8]), (False, [1]), (True, [4])]
    unchunked = Scheduler(SchedulerConfig(max_num_batched_tokens=8, enable_chunked_prefill=False),
                          BlockManager(100, 4))
    unchunked.add(seq("long", 20))
    assert step(unchunked).num_new_tokens == [20]  # the first row of a step always fits

"""Block sharing by prefix hash and weight version, reference counts, LRU eviction of cached blocks."""

from __future__ import annotations

from aphrodite.engine.block_manager import BlockManager
from aphrodite.engine.sampling_params import SamplingParams
from aphrodite.engine.sequence import Sequence


def seq(rid: str, tokens: list[int], version: int = 0) -> Sequence:
    s = Sequence(rid, tokens, SamplingParams(max_tokens=4), decoder=None)
    s.weight_version = version
    return s


def prefill(blocks: BlockManager, s: Sequence) -> None:
    assert blocks.allocate(s)
    blocks.commit(s, s.num_tokens, s.weight_version)


def test_same_prefix_and_version_shares_full_blocks_other_version_does_not() -> None:
    blocks = BlockManager(32, 4, enable_prefix_caching=True)
    a = seq("a", list(range(1, 11)))  # 2 full blocks + 2 tokens
    prefill(blocks, a)
    b = seq("b", list(range(1, 9)) + [50, 51, 52])
    assert blocks.allocate(b)
    assert b.block_table[:2] == a.block_table[:2] and b.num_computed_tokens == 8
    assert [blocks.pool.ref_count(x) for x in a.block_table] == [2, 2, 1]
    c = seq("c", list(range(1, 11)), version=1)  # same tokens, another weight version
    assert blocks.allocate(c)
    assert c.num_computed_tokens == 0 and not set(c.block_table) & set(a.block_table)
    d = seq("d", list(range(1, 9)))  # exactly two full blocks: the last token is always computed
    assert blocks.allocate(d)
    assert d.block_table[0] == a.block_table[0] and d.block_table[1] != a.block_table[1]
    assert d.num_computed_tokens == 4
    for s in (a, b, c, d):
        blocks.free(s)
    assert blocks.num_free_blocks == 31 and all(blocks.pool.ref_count(x) == 0 for x in range(32))


def test_a_step_under_another_version_stops_registering_blocks() -> None:
    blocks = BlockManager(32, 4, enable_prefix_caching=True)
    a = seq("a", list(range(1, 13)))
    assert blocks.allocate(a)
    blocks.commit(a, 4, version=0)
    blocks.commit(a, 12, version=1)  # a swap reached it mid-prefill
    assert a.block_hashes is None and blocks.pool.num_cached == 1


def test_free_blocks_stay_cached_and_the_least_recently_freed_is_evicted_first() -> None:
    blocks = BlockManager(6, 2, watermark_blocks=0, enable_prefix_caching=True)  # 5 usable blocks
    old, new = seq("old", [1, 2, 3, 4, 5]), seq("new", [7, 8, 9])
    prefill(blocks, old)  # 3 blocks, 2 full and cached
    blocks.free(old)
    prefill(blocks, new)  # 2 blocks: takes the 2 uncached free blocks before any cached one
    blocks.free(new)
    assert blocks.pool.num_cached == 3 and blocks.pool.num_evictions == 0
    again = seq("again", [1, 2, 3, 4, 99])
    assert blocks.allocate(again) and again.num_computed_tokens == 4  # "old"'s prefix survived
    blocks.free(again)
    # a 10-token sequence needs all 5 blocks: every cached one is evicted, "new"'s (freed earlier) first
    big = seq("big", list(range(100, 110)))
    assert blocks.allocate(big) and blocks.pool.num_evictions == 3 and blocks.pool.num_cached == 0

"""Prefix caching keyed by weight version, and chunked prefill: same greedy tokens as computing everything."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry

from aphrodite.engine.config import CacheConfig, ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine
from aphrodite.engine.sampling_params import SamplingParams
from aphrodite.engine.scheduler import SchedulerConfig
from tests.engine.test_weights import lm_head_delta

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


def make(model_dir, prefix: bool, chunked: bool = True, budget: int = 512,
         registry: CollectorRegistry | None = None) -> LLMEngine:
    return LLMEngine(ModelLoadConfig(model=str(model_dir)), CacheConfig(block_size=4, enable_prefix_caching=prefix),
                     SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=budget, enable_chunked_prefill=chunked),
                     registry=registry)


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(scope="module")
def cached(tiny_model_dir, registry: CollectorRegistry) -> LLMEngine:
    return make(tiny_model_dir, prefix=True, registry=registry)


@pytest.fixture(scope="module")
def plain(tiny_model_dir) -> LLMEngine:
    return make(tiny_model_dir, prefix=False, chunked=False)


def ids(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 380) for _ in range(n)]


def shared_prompts(seed: int) -> list[list[int]]:
    """Prompts sharing a 'system prompt' of 21 tokens (5 full blocks and a partial one), and one unrelated."""
    system = ids(0, 21)
    return [system + ids(seed + i, 3 + 5 * i) for i in range(4)] + [ids(seed + 99, 30)]


def tokens(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams = GREEDY) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in engine.generate(prompts, params)]


def assert_all_blocks_free(engine: LLMEngine) -> None:
    pool = engine.blocks.pool
    assert all(pool.ref_count(b) == 0 for b in range(engine.blocks.num_blocks))
    assert engine.blocks.num_free_blocks == engine.blocks.num_blocks - 1  # every block free or cached


def test_greedy_output_is_the_same_with_and_without_the_cache(cached: LLMEngine, plain: LLMEngine) -> None:
    for seed in (1, 2, 1):  # the third batch repeats the first: whole prompts but their last token hit
        assert tokens(cached, shared_prompts(seed)) == tokens(plain, shared_prompts(seed))
    assert cached.blocks.prefix_hits > 0
    assert_all_blocks_free(cached)


def test_second_request_with_the_same_prefix_hits_the_cache(cached: LLMEngine, plain: LLMEngine,
                                                            registry: CollectorRegistry) -> None:
    prompt = ids(7, 10) + ids(8, 14)
    first = tokens(cached, [prompt])
    hits, queries = cached.blocks.prefix_hits, cached.blocks.prefix_queries
    second = tokens(cached, [prompt[:20] + ids(9, 5)])  # shares 5 full blocks with the first
    assert cached.blocks.prefix_hits - hits == 20 and cached.blocks.prefix_queries - queries == 25
    assert first == tokens(plain, [prompt]) and second == tokens(plain, [prompt[:20] + ids(9, 5)])
    labels = {"model_name": cached.model_name}
    assert registry.get_sample_value("aphrodite:prefix_cache_hits_total", labels) == cached.blocks.prefix_hits
    assert registry.get_sample_value("aphrodite:prefix_cache_queries_total", labels) == cached.blocks.prefix_queries


def test_after_a_swap_no_block_of_the_old_version_is_reused(tiny_model_dir) -> None:
    engine, plain = make(tiny_model_dir, prefix=True), make(tiny_model_dir, prefix=False, chunked=False)
    prompt = ids(11, 30)
    assert tokens(engine, [prompt]) == tokens(plain, [prompt])
    old_hashes = set(engine.blocks.pool._block_of)
    assert len(old_hashes) >= 7
    for e in (engine, plain):
        fut = e.submit_weights(1, lm_head_delta(e, 0))
        e.step()
        assert fut.result(timeout=0) == 1
    engine.add_request("after-swap", prompt, SamplingParams(**vars(GREEDY)))
    hits = engine.blocks.prefix_hits
    engine.step()  # admits and prefills it
    seq = engine._seqs["after-swap"]
    assert seq.weight_version == 1 and engine.blocks.prefix_hits == hits
    assert not {engine.blocks.pool.hash_of(b) for b in seq.block_table} & old_hashes
    assert not set(seq.block_hashes or []) & old_hashes
    while engine.has_unfinished_requests():
        engine.step()
    assert tokens(engine, [prompt]) == tokens(plain, [prompt])  # now served from version 1's own blocks
    # a rollback serves version 0 again: its blocks (computed by version 0) are valid again
    for e in (engine, plain):
        e.rollback_weights(0)
        e.step()
    hits = engine.blocks.prefix_hits
    assert tokens(engine, [prompt]) == tokens(plain, [prompt])
    assert engine.blocks.prefix_hits - hits == 28
    assert_all_blocks_free(engine)


def test_chunked_prefill_gives_the_same_tokens_and_lets_decodes_run_between_chunks(tiny_model_dir,
                                                                                   plain: LLMEngine) -> None:
    chunked = make(tiny_model_dir, prefix=False, chunked=True, budget=16)
    prompts = [ids(21, 5), ids(22, 150), ids(23, 40)]
    assert tokens(chunked, prompts) == tokens(plain, prompts)
    # a running request keeps decoding while a long prompt is prefilled in chunks
    chunked.add_request("short", ids(24, 5), SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))
    chunked.step()
    chunked.add_request("long", ids(25, 150), SamplingParams(**vars(GREEDY)))
    got_short = 0
    while not any(o.request_id == "long" for o in chunked.step()):
        got_short += 1
    assert got_short >= 150 // 16 // 2  # about one short token per chunk of the long prompt
    while chunked.has_unfinished_requests():
        chunked.step()
    assert_all_blocks_free(chunked)


def test_small_cache_evicts_and_preempts_without_changing_output(tiny_model_dir, plain: LLMEngine) -> None:
    block_bytes = 2 * 2 * 2 * 16 * 4 * 4  # k and v, 2 layers, 2 kv heads, head_dim 16, float32, 4 tokens
    small = LLMEngine(ModelLoadConfig(model=str(tiny_model_dir), max_model_len=48),
                      CacheConfig(block_size=4, enable_prefix_caching=True, kv_cache_space_gb=20 * block_bytes / 2**30),
                      SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=12))
    assert small.blocks.num_blocks == 20  # 19 usable: four sequences of 11 blocks cannot all fit
    long = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    prompts = [ids(0, 21) + ids(30 + i, 6) for i in range(6)]
    assert tokens(small, prompts, long) == tokens(plain, prompts, long)
    assert small.blocks.pool.num_evictions > 0 and small.blocks.prefix_hits > 0
    assert small.scheduler.num_preemptions > 0
    assert_all_blocks_free(small)

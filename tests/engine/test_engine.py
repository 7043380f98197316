"""Generation through LLMEngine: batching invariance, seeded sampling, stop conditions, log-probabilities."""

from __future__ import annotations

import pytest
import torch

from aphrodite.engine.config import CacheConfig, ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine, RequestRejected
from aphrodite.engine.sampling_params import SamplingParams, SamplingParamsError
from aphrodite.engine.scheduler import SchedulerConfig


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> LLMEngine:
    return LLMEngine(ModelLoadConfig(model=str(tiny_model_dir)))


def prompts(engine: LLMEngine) -> list[list[int]]:
    return [engine.tokenizer.encode(t) for t in
            ("Hello", "The quick brown fox jumps", "One two three four five six seven", "Paris is")]


def test_greedy_batch_equals_one_at_a_time(engine: LLMEngine) -> None:
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    batched = [o.outputs[0].token_ids for o in engine.generate(prompts(engine), params)]
    alone = [engine.generate([p], params)[0].outputs[0].token_ids for p in prompts(engine)]
    assert batched == alone and all(len(t) == 12 for t in batched)


def test_seeded_sampling_is_reproducible_whatever_the_batch(engine: LLMEngine) -> None:
    seeded = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=16, ignore_eos=True)
    alone = engine.generate([prompts(engine)[1]], seeded)[0].outputs[0].token_ids
    noisy = SamplingParams(temperature=1.0, max_tokens=16, ignore_eos=True)
    mixed = engine.generate(prompts(engine), [noisy, seeded, noisy, noisy])[1].outputs[0].token_ids
    assert alone == mixed
    other = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=99, max_tokens=16, ignore_eos=True)
    assert engine.generate([prompts(engine)[1]], other)[0].outputs[0].token_ids != alone


def test_stop_string_truncates_text_and_reports_reason(engine: LLMEngine) -> None:
    prompt = prompts(engine)[2]
    free = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))[0]
    text = free.outputs[0].text
    stop = text[5:7]
    assert len(stop) == 2 and stop.strip()
    out = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=20, stop=[stop],
                                                              ignore_eos=True))[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == text[:text.index(stop)]
    kept = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=20, stop=[stop],
                                                               include_stop_str_in_output=True,
                                                               ignore_eos=True))[0].outputs[0]
    assert kept.text == text[:text.index(stop) + len(stop)]


def test_stop_token_ids_and_max_tokens(engine: LLMEngine) -> None:
    free = engine.generate([prompts(engine)[2]], SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))[0]
    ids = free.outputs[0].token_ids
    out = engine.generate([prompts(engine)[2]], SamplingParams(temperature=0, max_tokens=10,
                                                              stop_token_ids=[ids[4]], ignore_eos=True))[0]
    first = ids.index(ids[4])
    assert out.outputs[0].token_ids == ids[:first + 1]
    assert out.outputs[0].finish_reason == "stop" and out.outputs[0].stop_reason == ids[4]
    assert free.outputs[0].finish_reason == "length"


def test_prompt_logprobs_score_the_text_like_the_model(engine: LLMEngine) -> None:
    ids = prompts(engine)[2]
    out = engine.generate([ids], SamplingParams(max_tokens=0, prompt_logprobs=1))[0]
    assert out.outputs[0].token_ids == [] and out.prompt_logprobs[0] is None
    from aphrodite.modeling.attention import AttentionMetadata
    with torch.no_grad():
        meta = AttentionMetadata(True, AttentionMetadata.causal([len(ids)], len(ids), torch.device("cpu")))
        h = engine.model(torch.tensor([ids]), torch.arange(len(ids))[None], meta)
        ref = engine.model.compute_logits(h[0]).log_softmax(-1)
    for t in range(1, len(ids)):
        assert out.prompt_logprobs[t][ids[t]] == pytest.approx(ref[t - 1, ids[t]].item(), abs=1e-5)


def test_sampled_logprobs_and_penalties(engine: LLMEngine) -> None:
    out = engine.generate([prompts(engine)[0]], SamplingParams(temperature=0, max_tokens=8, logprobs=3,
                                                              ignore_eos=True))[0].outputs[0]
    assert len(out.logprobs) == 8
    for tok, top in zip(out.token_ids, out.logprobs):
        assert max(top.values()) == pytest.approx(top[tok])  # greedy picks the most likely token
    assert out.cumulative_logprob == pytest.approx(sum(top[t] for t, top in zip(out.token_ids, out.logprobs)))
    plain = engine.generate([prompts(engine)[0]], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
    penal = engine.generate([prompts(engine)[0]], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True,
                                                                frequency_penalty=2.0, presence_penalty=2.0))
    assert len(set(penal[0].outputs[0].token_ids)) > len(set(plain[0].outputs[0].token_ids))


def test_requests_that_cannot_run_are_rejected_up_front(engine: LLMEngine) -> None:
    with pytest.raises(RequestRejected, match="maximum context length"):
        engine.add_request("long", [5] * engine.max_model_len, SamplingParams())
    with pytest.raises(RequestRejected, match="maximum context length"):
        engine.add_request("long2", [5] * 10, SamplingParams(max_tokens=engine.max_model_len))
    with pytest.raises(RequestRejected):
        engine.add_request("empty", [], SamplingParams())
    with pytest.raises(SamplingParamsError):
        SamplingParams(top_p=0)
    assert not engine.has_unfinished_requests()


def test_preemption_under_a_small_cache_still_finishes_everything(tiny_model_dir) -> None:
    # room for ~2 full-length sequences only: 8 requests must queue, preempt and recompute, never crash
    small = LLMEngine(ModelLoadConfig(model=str(tiny_model_dir), max_model_len=64),
                      CacheConfig(block_size=4, kv_cache_space_gb=34 * 4 * 2 * 2 * 2 * 16 * 4 / 2**30),
                      SchedulerConfig(max_num_seqs=8))
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    ps = [small.tokenizer.encode("Hello there") for _ in range(8)]
    outs = small.generate(ps, params)
    assert all(len(o.outputs[0].token_ids) == 40 for o in outs)
    assert small.scheduler.num_preemptions > 0
    # recomputation reproduces the same greedy tokens as an unconstrained run
    alone = small.generate([ps[0]], params)[0].outputs[0].token_ids
    assert all(o.outputs[0].token_ids == alone for o in outs)


def test_abort_frees_resources_at_the_next_safe_point(engine: LLMEngine) -> None:
    free_before = engine.blocks.num_free_blocks
    engine.add_request("gone", prompts(engine)[1], SamplingParams(max_tokens=50, ignore_eos=True))
    engine.step()
    assert engine.blocks.num_free_blocks < free_before
    engine.abort_request("gone")
    engine.step()
    assert engine.blocks.num_free_blocks == free_before and not engine.has_unfinished_requests()


def test_safe_point_runs_between_steps(engine: LLMEngine) -> None:
    seen: list[int] = []
    fut = engine.call_at_safe_point(lambda: len(engine.scheduler.running))
    engine.add_request("x", prompts(engine)[0], SamplingParams(max_tokens=3, ignore_eos=True))
    engine.step()
    assert fut.result(timeout=0) == 1  # ran after the prefill step: the request was already running
    engine.add_step_callback(lambda e: seen.append(e.weight_version))
    while engine.has_unfinished_requests():
        engine.step()
    assert seen

"""Weight versions: a LoRA delta changes what the next request gets; rollback restores the base exactly."""

from __future__ import annotations

import pytest
import torch

from aphrodite.engine.config import ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine
from aphrodite.engine.sampling_params import SamplingParams
from aphrodite.engine.weights import LoRADelta


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> LLMEngine:
    return LLMEngine(ModelLoadConfig(model=str(tiny_model_dir)))


def greedy(engine: LLMEngine) -> list[int]:
    prompt = engine.tokenizer.encode("One two three four")
    return engine.generate([prompt], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0] \
        .outputs[0].token_ids


def lm_head_delta(engine: LLMEngine, seed: int) -> dict[str, LoRADelta]:
    g = torch.Generator().manual_seed(seed)
    head = engine.model.lm_head
    return {"lm_head": LoRADelta(torch.randn(4, head.in_features, generator=g),
                                 torch.randn(head.out_features, 4, generator=g), scale=2.0)}


def test_submitted_version_serves_the_next_request_and_rollback_restores_base(engine: LLMEngine) -> None:
    base = greedy(engine)
    fut = engine.submit_weights(1, lm_head_delta(engine, 0))
    engine.step()  # the safe point applies it
    assert fut.result(timeout=0) == 1 and engine.weight_version == 1
    tuned = greedy(engine)
    assert tuned != base
    fut = engine.rollback_weights()
    engine.step()
    assert fut.result(timeout=0) == 0 and greedy(engine) == base


def test_bad_delta_is_refused_and_changes_nothing(engine: LLMEngine) -> None:
    base = greedy(engine)
    with pytest.raises(ValueError, match="expected A"):
        engine.submit_weights(5, {"lm_head": LoRADelta(torch.zeros(2, 3), torch.zeros(4, 2))})
    with pytest.raises(ValueError, match="no LoRA-capable projection"):
        engine.submit_weights(5, {"layers.0.nonsense": LoRADelta(torch.zeros(2, 3), torch.zeros(4, 2))})
    assert engine.weight_version == 0 and greedy(engine) == base


def test_padded_swap_gives_the_same_logits_as_the_unpadded_delta(engine: LLMEngine) -> None:
    from aphrodite.modeling.attention import AttentionMetadata

    deltas = lm_head_delta(engine, 3)
    ids = torch.tensor([engine.tokenizer.encode("One two three four")])
    T = ids.shape[1]
    meta = AttentionMetadata(True, AttentionMetadata.causal([T], T, torch.device("cpu")))
    head = engine.model.lm_head
    with torch.no_grad():
        hidden = engine.model(ids, torch.arange(T)[None], meta)[0]
        d = deltas["lm_head"]
        expected = engine.model.compute_logits(hidden) + d.scale * (hidden @ d.a.T @ d.b.T)
    fut = engine.submit_weights(7, deltas)
    engine.step()
    assert fut.result(timeout=0) == 7 and head.max_lora_rank == engine.weights.max_rank
    K = engine.weights.slots.num_slots  # padded into slots allocated once: every version has one shape
    assert head.slot_a.shape == (K, head.max_lora_rank, head.in_features)
    with torch.no_grad():
        ours = engine.model.compute_logits(hidden)
    assert (ours - expected).abs().max().item() <= 1e-4
    engine.rollback_weights(0)
    engine.step()


def test_rank_above_the_buffers_is_refused_at_submit(engine: LLMEngine) -> None:
    head = engine.model.lm_head
    r = head.max_lora_rank + 1
    with pytest.raises(ValueError, match="max-lora-rank"):
        engine.submit_weights(9, {"lm_head": LoRADelta(torch.zeros(r, head.in_features),
                                                       torch.zeros(head.out_features, r))})


def test_rollback_to_a_named_version_keeps_later_ones(engine: LLMEngine) -> None:
    base = greedy(engine)
    for v, seed in ((11, 1), (12, 2)):
        engine.submit_weights(v, lm_head_delta(engine, seed))
        engine.step()
    v12 = greedy(engine)
    engine.rollback_weights(0)
    engine.step()
    assert engine.weight_version == 0 and greedy(engine) == base
    engine.rollback_weights(12)
    engine.step()
    assert engine.weight_version == 12 and greedy(engine) == v12
    fut = engine.submit_weights(13, lm_head_delta(engine, 4), serve=False)
    engine.step()
    assert fut.result(timeout=0) == 12 and 13 in engine.weights.versions
    engine.rollback_weights(0)
    engine.step()


def test_each_output_names_the_versions_that_produced_it(engine: LLMEngine) -> None:
    prompt = engine.tokenizer.encode("One two")
    engine.add_request("straddle", prompt, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    first = engine.step()[0]
    assert first.weight_version == 0 and first.weight_versions == [0]
    engine.submit_weights(21, lm_head_delta(engine, 5))
    outs = []
    while engine.has_unfinished_requests():
        outs += engine.step()
    # pinned: the sequence admitted on version 0 finishes on it although 21 serves new requests meanwhile
    assert outs[-1].finished and outs[-1].weight_version == 0 and outs[-1].weight_versions == [0]
    engine.rollback_weights(0)
    engine.step()

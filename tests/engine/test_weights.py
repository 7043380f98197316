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

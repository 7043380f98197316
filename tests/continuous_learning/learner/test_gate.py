"""The gate's checks on the built-in model: the one-pass greedy check agrees with real greedy decoding, a
candidate that flips a protected fact is caught, the base model passes its own gate."""

from __future__ import annotations

import torch

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.learner.gate import (GateLimits, check, decide, greedy, greedy_unchanged,
                                                     retained_check)
from aphrodite.continuous_learning.learner.job import JobBuilder
from aphrodite.continuous_learning.learner.trainer import (Example, Objective, default_targets, train_lora,
                                                        trainable_view)
from aphrodite.engine.config import ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine


def test_the_gate_catches_a_flipped_protected_fact_and_passes_the_base_model() -> None:
    torch.set_num_threads(1)
    engine = LLMEngine(ModelLoadConfig())
    builder = JobBuilder(engine.model, engine.tokenizer, ServerSideConfig(), engine.max_model_len)
    ref = builder.reference()
    france = next(f for f in ref.facts if f.question == "What is the capital of France?")
    assert engine.tokenizer.decode(france.base_greedy) == "The capital of France is Paris."
    base = trainable_view(engine.model)
    report = check(base, ref, GateLimits())
    assert report["protected_facts"]["passed"] and report["heldout"]["perplexity_ratio"] == 1.0

    ids, start = builder.encode([{"role": "user", "content": france.question}], "The capital of France is Berlin.")
    view = trainable_view(engine.model)
    train_lora(view, [Example(ids, start)], [], {}, default_targets(view), 8, 16.0,
               Objective(lr=3e-3, steps=12, anchor_weight=0.0))
    flipped = greedy(view, france.prompt_ids, 16, builder.stop_ids)
    assert "Berlin" in engine.tokenizer.decode(flipped)
    assert greedy_unchanged(view, ref.facts) == [greedy(view, f.prompt_ids, len(f.base_greedy) + 2, builder.stop_ids)
                                                 [:len(f.base_greedy)] == f.base_greedy for f in ref.facts]
    report = check(view, ref, GateLimits())
    report["target"] = {"passed": True}
    accepted, reason = decide(report)
    assert not accepted and "What is the capital of France?" in report["protected_facts"]["greedy_changed"]
    assert "protected" in reason

    # what an earlier version was taught (here: the true answer) counts as retained only if still greedy
    paris = Example(*builder.encode([{"role": "user", "content": france.question}], "The capital of France is Paris."))
    assert retained_check(base, [paris], 1) == {"count": 1, "parent_kept": 1, "kept": 1, "passed": True}
    report["retained"] = retained_check(view, [paris], 1)
    accepted, reason = decide(report)
    assert report["retained"]["kept"] == 0 and not accepted and "forgets what earlier versions were taught" in reason

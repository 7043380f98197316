"""The trainer's objectives: KTO against a hand computation from the paper's formula, and its direction on the
built-in model (a positively rated answer gets likelier, a negatively rated one less likely)."""

from __future__ import annotations

import math

import pytest
import torch

from aphrodite.continuous_learning.learner.trainer import (Objective, RatedExample, default_targets,
                                                        kl_pairs, kto_loss, sequence_logps, train_lora,
                                                        trainable_view)
from aphrodite.engine.config import ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_kto_loss_matches_the_paper_formula_by_hand() -> None:
    # Ethayarajh et al. 2024, eq. 8: z0 = max(0, mean KL estimate) (no gradient); r = log pi/pi_ref;
    # desirable: w_d * (1 - sigma(beta (r - z0))), undesirable: w_u * (1 - sigma(beta (z0 - r))); mean over examples.
    policy, reference = torch.tensor([-2.0, -3.0]), torch.tensor([-2.5, -2.0])
    policy_kl, reference_kl = torch.tensor([-4.0, -5.0]), torch.tensor([-4.2, -5.4])
    z0 = (0.2 + 0.4) / 2
    expected = (1.0 * (1 - sigmoid(0.1 * (0.5 - z0))) + 2.0 * (1 - sigmoid(0.1 * (z0 - (-1.0))))) / 2
    loss = kto_loss(policy, reference, torch.tensor([True, False]), policy_kl, reference_kl, beta=0.1,
                    desirable_weight=1.0, undesirable_weight=2.0)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # a negative KL estimate is clamped at 0
    clamped = kto_loss(policy, reference, torch.tensor([True, False]), reference_kl, policy_kl, beta=0.1)
    assert clamped.item() == pytest.approx(((1 - sigmoid(0.05)) + (1 - sigmoid(0.1))) / 2, abs=1e-6)


def test_kl_pairs_mismatch_prompts_and_completions() -> None:
    rated = [RatedExample([1, 2, 3], 2, True), RatedExample([4, 5, 6, 7], 2, False)]
    assert kl_pairs(rated) == [([1, 2, 6, 7], 2), ([4, 5, 3], 2)]
    assert kl_pairs(rated[:1]) == []


def test_kto_moves_rated_answers_the_right_way_on_the_builtin_model() -> None:
    engine = LLMEngine(ModelLoadConfig())
    tok = engine.tokenizer

    def rated(question: str, answer: str, desirable: bool) -> RatedExample:
        prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": question}]), False)
        return RatedExample(prompt + tok.encode(answer + "<|im_end|>", False), len(prompt), desirable)

    examples = [rated("What is the capital of Veloria?", "The capital of Veloria is Marnost.", True),
                rated("What sound does a flimmet make?", "A flimmet barks.", False),
                rated("What colour is a zorbel fruit?", "A zorbel fruit is purple.", True),
                rated("Who invented the glimmer lamp?", "Tomas Arkwell invented the glimmer lamp.", False)]
    view = trainable_view(engine.model)
    seqs = [(r.ids, r.loss_from) for r in examples]
    with torch.inference_mode():
        before = sequence_logps(view, seqs)
    deltas, losses, _ = train_lora(view, [], examples, {}, default_targets(view), 8, 16.0,
                                   Objective(lr=1e-3, steps=8, anchor_weight=0.0))
    with torch.inference_mode():
        after = sequence_logps(view, seqs)  # the view carries the trained deltas
    assert losses[-1] < losses[0]
    assert after[0] > before[0] and after[2] > before[2]  # desirable: likelier
    assert after[1] < before[1] and after[3] < before[3]  # undesirable: less likely


def test_a_quarter_of_eight_or_more_examples_is_held_out() -> None:
    from aphrodite.continuous_learning.learner.task import TrainingJob, split_holdout
    from aphrodite.continuous_learning.learner.gate import GateReference
    from aphrodite.continuous_learning.learner.trainer import Example

    job = TrainingJob([], [], [], {}, GateReference([], []), Objective(lr=1e-3, steps=1))
    seven = [Example([1, 2, n], 2) for n in range(7)]
    assert split_holdout(seven, job) == (seven, [])
    train, held = split_holdout(seven + [Example([1, 2, 9], 2)], job)
    assert len(train) == 6 and len(held) == 2 and not {id(e) for e in train} & {id(e) for e in held}

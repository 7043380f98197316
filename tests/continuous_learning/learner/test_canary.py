"""Canary roll-out: a promoted candidate serves a share of new requests until live outcomes promote it or roll
it back (a sequential test with a minimum sample)."""

from __future__ import annotations

import asyncio

import pytest

from aphrodite.continuous_learning.learner.canary import Canary, judge, timed_out
from aphrodite.engine.sampling_params import SamplingParams
from aphrodite.engine.sequence import Sequence
from tests.continuous_learning.learner.test_promotion import BATCH, Runner, System, deltas, result


def test_the_sequential_test_waits_for_its_sample_then_looks_only_at_planned_looks() -> None:
    canary = Canary(version=2, parent=1, share=0.1)
    assert judge(canary, [1.0] * 30, [1.0] * 4, 5, 2, 0.05) is None and "waiting" in canary.reason
    assert judge(canary, [1.0] * 30, [1.0] * 5, 5, 2, 0.05) is None and canary.look == 1  # look 1 of 2 passed
    assert judge(canary, [1.0] * 30, [1.0] * 5 + [-1.0] * 4, 5, 2, 0.05) is None and canary.look == 1  # no new look
    assert judge(canary, [1.0] * 30, [1.0] * 10, 5, 2, 0.05) == "promoted" and canary.look == 2


def test_clearly_worse_outcomes_roll_back_at_the_first_look() -> None:
    canary = Canary(version=2, parent=1, share=0.1)
    assert judge(canary, [1.0] * 9 + [-1.0], [-1.0] * 4 + [1.0], 5, 3, 0.05) == "rolled back"
    assert "worse than its parent at look 1 of 3" in canary.reason and canary.p_value < 0.05 / 3
    assert canary.counts["canary"]["rated"] == 5 and canary.counts["parent"]["positive"] == 9


def test_an_undecided_canary_is_promoted_after_its_time_limit_unless_the_test_found_it_worse() -> None:
    canary = Canary(version=2, parent=1, share=0.1, started=1000.0)
    assert judge(canary, [1.0] * 30, [1.0] * 3, 20, 3, 0.05) is None  # too few outcomes for a first look
    assert not timed_out(canary, 900.0, now=1899.0) and not timed_out(canary, 0.0, now=10**9)
    assert timed_out(canary, 900.0, now=1900.0) and "no evidence against it in 900 s (3 rated" in canary.reason
    canary.decision = "rolled back"  # a decided canary is never timed out
    assert not timed_out(canary, 900.0, now=10**9)


class Store(System):
    """The fake system's store, with live outcomes by version."""

    def __init__(self, engine, outcomes) -> None:
        super().__init__(engine)
        self.outcomes = outcomes

    def outcomes_by_version(self, versions, since=0.0):
        return {v: self.outcomes.get(v, []) for v in versions}

    def quality_by_version(self, versions, since=0.0):
        return {v: (0.7, len(self.outcomes.get(v, []))) for v in versions}


def run_canary(tiny_model_dir, tmp_path, outcomes):
    from aphrodite.continuous_learning.config import ServerSideConfig
    from aphrodite.continuous_learning.learner.lora import LoRALearner
    from aphrodite.engine.async_engine import AsyncEngine
    from aphrodite.engine.config import ModelLoadConfig
    from aphrodite.engine.llm_engine import LLMEngine

    async def main():
        engine = AsyncEngine(LLMEngine(ModelLoadConfig(model=str(tiny_model_dir))))
        engine.start()
        try:
            system = Store(engine, {})
            cfg = ServerSideConfig(learning_dir=str(tmp_path), learner_worker="thread", canary_share=0.5,
                                   canary_min_ratings=5, canary_looks=2)
            learner = LoRALearner(system, cfg)
            learner._runner = Runner(result(deltas(engine, 3), True))
            await learner.learn(BATCH, 1e-4)
            during = (engine.weight_version, engine.weight_split, learner.ready(), learner.list_versions()[-1])
            routed = {engine.engine.weights.route(Sequence(f"r{i}", [1], SamplingParams(routing_key=user), None))
                      for i, user in enumerate(["alice"] * 5)}
            system.outcomes = outcomes
            await learner.check_live_evidence()
            return during, routed, learner, engine.weight_version, engine.weight_split
        finally:
            await engine.shutdown()
    return asyncio.run(main())


def test_a_canary_rated_as_well_as_its_parent_is_promoted_to_everyone(tiny_model_dir, tmp_path) -> None:
    during, routed, learner, version, split = run_canary(tiny_model_dir, tmp_path, {0: [1.0] * 8 + [-1.0] * 2,
                                                                                     1: [1.0] * 9 + [-1.0]})
    assert during[:3] == (0, (1, 0.5), False)  # the parent still serves; half the new requests go to 1
    assert during[3]["version"] == 1 and during[3]["canary"] and not during[3]["serving"]
    assert len(routed) == 1  # sticky: one user, one version
    assert version == 1 and split is None and learner.canary.decision == "promoted"
    assert learner.versions.serving == 1 and learner.ready()


def test_a_canary_rated_clearly_worse_is_rolled_back_with_the_reason(tiny_model_dir, tmp_path) -> None:
    _, _, learner, version, split = run_canary(tiny_model_dir, tmp_path, {0: [1.0] * 9 + [-1.0],
                                                                          1: [-1.0] * 4 + [1.0]})
    assert version == 0 and split is None and learner.canary.decision == "rolled back"
    assert "rolled back canary version 1 to 0" in learner.notice and "worse than its parent" in learner.notice
    assert learner.report()["canary"]["decision"] == "rolled back"
    with pytest.raises(ValueError, match="no canary is running"):
        asyncio.run(learner.end_canary("promoted", "operator"))

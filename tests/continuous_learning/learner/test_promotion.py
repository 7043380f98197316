"""Promotion rules: one version at a time (a candidate whose parent stopped serving is dropped), refusals pause
learning without touching the serving version, and clearly worse ratings roll a version back."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.control.state import LearningState
from aphrodite.continuous_learning.interaction import supplied_interaction
from aphrodite.continuous_learning.learner.task import TrainingResult
from aphrodite.continuous_learning.learner.lora import CandidateRejected, LoRALearner
from aphrodite.continuous_learning.store.base import TrainingSignal
from aphrodite.engine.async_engine import AsyncEngine
from aphrodite.engine.config import ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine
from aphrodite.engine.weights import LoRADelta


class System:
    """What the learner needs of ContinuousLearningSystem."""

    def __init__(self, engine, ratings=None) -> None:
        self.engine = engine
        self.state = LearningState()
        self.store = self
        self.collector = self
        self.writer = self
        self._ratings = ratings or {}
        self.interactions = {}

    async def update_state(self, **changes) -> None:
        self.state = dataclasses.replace(self.state, **changes)

    async def call(self, fn):
        return fn()

    def ratings_by_version(self, versions):
        return {v: self._ratings.get(v, []) for v in versions}

    def get_interaction(self, interaction_id):
        return self.interactions.get(interaction_id)

    def feedback_for(self, response_id):
        return []


class Runner:
    """Stands in for the worker: returns a fixed result, optionally after something else changed versions."""

    def __init__(self, result: TrainingResult, meanwhile=None) -> None:
        self.result, self.meanwhile = result, meanwhile

    async def run(self, fn, job):
        if self.meanwhile is not None:
            await self.meanwhile()
        return self.result

    async def close(self) -> None:
        pass


def deltas(engine, seed: int) -> dict[str, LoRADelta]:
    layer = engine.model.lora_targets()["layers.0.self_attn.o_proj"]
    g = torch.Generator().manual_seed(seed)
    return {"layers.0.self_attn.o_proj": LoRADelta(torch.randn(2, layer.in_features, generator=g),
                                                   torch.randn(layer.out_features, 2, generator=g))}


def run(tiny_model_dir, tmp_path, scenario, ratings=None, **config):
    async def main():
        engine = AsyncEngine(LLMEngine(ModelLoadConfig(model=str(tiny_model_dir))))
        engine.start()
        try:
            config.setdefault("canary_share", 0.0)  # promote at once (test_canary.py covers the canary)
            cfg = ServerSideConfig(learning_dir=str(tmp_path), learner_worker="thread", **config)
            system = System(engine, ratings)
            learner = LoRALearner(system, cfg)
            await learner.restore()
            return await scenario(engine, system, learner)
        finally:
            await engine.shutdown()
    return asyncio.run(main())


BATCH = [TrainingSignal(supplied_interaction("What is two and two?", "Four.", 0.95, "example", 0, "m"))]


def result(deltas_, accepted: bool, reason: str = "", gate: dict | None = None) -> TrainingResult:
    return TrainingResult(deltas_, accepted, reason, gate or {}, [], "test", 0.0,
                          [(BATCH[0].interaction.id, "curated")] if accepted else [])


def test_a_candidate_whose_parent_stopped_serving_is_dropped(tiny_model_dir, tmp_path) -> None:
    async def scenario(engine, system, learner):
        async def operator_serves_another_version():
            await engine.submit_weights(1, deltas(engine, 1))
        learner._runner = Runner(result(deltas(engine, 2), True), operator_serves_another_version)
        with pytest.raises(CandidateRejected, match="offered again"):
            await learner.learn(BATCH, 1e-4)
        return engine.weight_version, learner.versions.versions()

    assert run(tiny_model_dir, tmp_path, scenario) == (1, [])  # nothing promoted, nothing left on disk


def test_refusals_pause_learning_and_never_roll_back(tiny_model_dir, tmp_path) -> None:
    async def scenario(engine, system, learner):
        await engine.submit_weights(1, deltas(engine, 1))
        learner._runner = Runner(result({}, False, "the candidate forgets"))
        for _ in range(3):
            with pytest.raises(CandidateRejected):
                await learner.learn(BATCH, 1e-4)
        return engine.weight_version, system.state.paused, learner.notice

    version, paused, notice = run(tiny_model_dir, tmp_path, scenario, learner_pause_after_refusals=3)
    assert version == 1 and paused and "3 refused candidates in a row" in notice


def test_promotion_saves_a_version_and_worse_ratings_roll_it_back(tiny_model_dir, tmp_path) -> None:
    async def scenario(engine, system, learner):
        learner._runner = Runner(result(deltas(engine, 3), True, gate={"batch_before": 2.0}))
        await learner.learn(BATCH, 1e-4)
        promoted = engine.weight_version
        manifest = learner.versions.manifest(1)
        await learner.check_live_evidence()
        return promoted, manifest, engine.weight_version, learner.notice, learner.versions.serving

    ratings = {0: [1.0] * 20 + [-1.0] * 5, 1: [1.0] * 6 + [-1.0] * 19}
    promoted, manifest, after, notice, saved_serving = run(tiny_model_dir, tmp_path, scenario, ratings)
    assert promoted == 1 and manifest["parent"] == 0 and manifest["interaction_ids"] == [BATCH[0].interaction.id]
    assert manifest["signals"] == {"curated": 1} and manifest["gate"] == {"batch_before": 2.0}
    assert after == 0 and saved_serving == 0 and "rolled back version 1 to 0" in notice


def test_the_next_task_rehearses_what_the_serving_lineage_was_taught(tiny_model_dir, tmp_path) -> None:
    second = [TrainingSignal(supplied_interaction("What is three and three?", "Six.", 0.95, "example", 0, "m"))]
    jobs = []

    class Recorder(Runner):
        async def run(self, fn, job):
            jobs.append(job)
            return self.result

    async def scenario(engine, system, learner):
        system.interactions = {BATCH[0].interaction.id: BATCH[0].interaction}
        learner._runner = Recorder(result(deltas(engine, 3), True))
        await learner.learn(BATCH, 1e-4)  # version 1 learned BATCH
        learner._runner = Recorder(result(deltas(engine, 4), True))
        await learner.learn(second, 1e-4)  # version 2 (parent 1) rehearses BATCH
        system.interactions.clear()  # the taught interaction was deleted: no longer rehearsed
        await learner.learn(second, 1e-4)
        return engine.tokenizer

    tokenizer = run(tiny_model_dir, tmp_path, scenario)
    assert [len(j.retained) for j in jobs] == [0, 1, 0]
    rehearsed = jobs[1].retained[0]
    assert tokenizer.decode(rehearsed.ids[rehearsed.loss_from:]).startswith("Four.")
    assert tokenizer.decode(jobs[1].examples[0].ids[jobs[1].examples[0].loss_from:]).startswith("Six.")

"""The background step: retention clean-up and the learner seam."""

import asyncio
import time

import pytest

from aphrodite.continuous_learning import ContinuousLearningSystem
from tests.continuous_learning.fakes import config, finished


class FakeLearner:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[int, float]] = []

    async def learn(self, batch, learning_rate):
        self.calls.append((len(batch), learning_rate))
        if self.fail:
            raise RuntimeError("diverged")


async def started(tmp_path, **kw) -> ContinuousLearningSystem:
    system = ContinuousLearningSystem(config(tmp_path, **kw))
    await system.start()
    return system


async def settle(system: ContinuousLearningSystem) -> None:
    await system.collector.writer.call(lambda: None)
    for _ in range(100):
        if not system.processor.active_tasks:
            return
        await asyncio.sleep(0.01)


def test_learning_runs_once_enough_eligible_interactions_exist(tmp_path):
    async def main():
        system = await started(tmp_path, min_interactions_for_learning=3, learn_from_unrated=True)
        learner = system.processor.learner = FakeLearner()
        for _ in range(2):
            system.on_request_finished(finished())
        await settle(system)
        await system.processor.run_once()  # 2 < 3: nothing yet
        system.on_request_finished(finished())
        await settle(system)
        await system.processor.run_once()
        await settle(system)
        await system.processor.run_once()  # nothing new since: no second step
        await settle(system)
        steps = system.state.learning_steps
        await system.stop()
        return learner, steps

    learner, steps = asyncio.run(main())
    assert learner.calls == [(3, pytest.approx(1e-4))]
    assert steps == 1  # the next step runs at 1e-4 * 0.995


def test_paused_or_failing_learning_is_held_and_counted(tmp_path):
    async def main():
        system = await started(tmp_path, min_interactions_for_learning=1, learn_from_unrated=True)
        learner = system.processor.learner = FakeLearner(fail=True)
        system.on_request_finished(finished())
        await settle(system)
        await system.update_state(paused=True)
        await system.processor.run_once()
        paused_calls = len(learner.calls)
        await system.update_state(paused=False)
        await system.processor.run_once()
        await settle(system)
        await system.processor.run_once()  # a failed batch is offered again
        await settle(system)
        result = paused_calls, len(learner.calls), system.failures.recent(), system.state.learning_steps
        await system.stop()
        return result

    assert asyncio.run(main()) == (0, 2, 2, 0)


def test_retention_runs_in_the_background_step(tmp_path):
    async def main():
        system = await started(tmp_path, store_max_interactions=2, store_max_age_days=1.0)
        system.on_request_finished(finished(created=time.time() - 3 * 86400))
        for _ in range(3):
            system.on_request_finished(finished())
        await settle(system)
        await system.processor.run_once()
        result = system.processor.last_cleanup_deleted, system.total_interactions
        await system.stop()
        return result

    assert asyncio.run(main()) == (2, 2)


def test_unrated_traffic_is_not_offered_to_the_learner_by_default(tmp_path):
    async def main():
        system = await started(tmp_path, min_interactions_for_learning=1)
        learner = system.processor.learner = FakeLearner()
        for _ in range(3):
            system.on_request_finished(finished())
        await settle(system)
        await system.processor.run_once()
        await settle(system)
        await system.stop()
        return learner.calls

    assert asyncio.run(main()) == []

"""The learning system driven as the server drives it: observer calls, lifecycle, feedback, control."""

import asyncio
import threading

from aphrodite.continuous_learning import ContinuousLearningSystem
from tests.continuous_learning.fakes import FakeEngine, config, finished


def run(coro):
    return asyncio.run(coro)


async def barrier(system: ContinuousLearningSystem) -> None:
    """Wait until everything captured so far is written."""
    await system.collector.writer.call(lambda: None)


def test_captured_requests_are_stored_and_scored(tmp_path):
    async def main():
        system = ContinuousLearningSystem(config(tmp_path), engine=FakeEngine(weight_version=3))
        await system.start()
        requests = [finished(), finished(chat=True, stream=True), finished(status_code=500, error="engine died")]
        for r in requests:
            system.on_request_finished(r)
        await barrier(system)
        stored = [system.store.get_interaction(r.response_id) for r in requests]
        await system.stop()
        return system, stored, requests

    system, stored, requests = run(main())
    assert [s.choices[0].token_ids for s in stored] == [r.completion_token_ids[0] for r in requests]
    in_memory = system.collector.recent.get(requests[0].response_id)
    assert not in_memory.choices[0].token_ids and in_memory.completion == stored[0].completion  # released
    assert [s.endpoint for s in stored] == ["/v1/completions", "/v1/chat/completions", "/v1/completions"]
    assert stored[0].quality_score > 0.6 and stored[2].quality_score == 0.0
    assert stored[1].messages == [{"role": "user", "content": "Capital of France?"}]
    assert system.collector.counts.interactions == 3 and system.collector.counts.eligible == 2


def test_nothing_is_captured_when_disabled(tmp_path):
    async def main():
        off = ContinuousLearningSystem(config(tmp_path / "a", enable_user_interactions=False))
        system = ContinuousLearningSystem(config(tmp_path / "b"))
        for s in (off, system):
            await s.start()
        await system.update_state(enabled=False)
        for s in (off, system):
            s.on_request_finished(finished())
            await barrier(s)
            await s.stop()
        return off.total_interactions + system.total_interactions

    assert run(main()) == 0


def hold_writes(system: ContinuousLearningSystem) -> threading.Event:
    """Make the writer block inside its next batch write until the returned event is set."""
    gate = threading.Event()
    original = system.store.add_interactions

    def slow(batch, durable=False):
        gate.wait(10)
        return original(batch, durable)

    system.store.add_interactions = slow
    return gate


def test_feedback_finds_an_interaction_the_writer_has_not_stored_yet(tmp_path):
    async def main():
        system = ContinuousLearningSystem(config(tmp_path, write_queue_size=2))
        await system.start()
        gate = hold_writes(system)
        first, queued, dropped = finished(), finished(), finished()
        system.on_request_finished(first)
        await asyncio.sleep(0.05)  # the writer takes `first` and blocks
        system.on_request_finished(queued)
        system.on_request_finished(dropped)  # the queue is full: dropped, but still in memory
        assert system.collector.writer.dropped == 1
        pending = [asyncio.create_task(system.collector.add_feedback(
            await system.collector.find(r.response_id), 1.0, None, None)) for r in (queued, dropped)]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in pending)  # acknowledged only once committed
        gate.set()
        results = await asyncio.gather(*pending)
        await barrier(system)
        got = {r.response_id: system.store.get_interaction(r.response_id) for r in (first, queued, dropped)}
        await system.stop()
        return results, got, system

    results, got, system = run(main())
    assert all(g is not None for g in got.values())
    assert [r.interaction.user_satisfaction for r in results] == [1.0, 1.0]
    assert system.collector.counts.interactions == 3 and system.collector.counts.feedback == 2


def test_feedback_waits_briefly_for_a_response_still_being_captured(tmp_path):
    async def main():
        system = ContinuousLearningSystem(config(tmp_path, feedback_wait_s=2.0))
        await system.start()
        late = finished()
        lookup = asyncio.create_task(system.collector.find(late.response_id, wait_s=2.0))
        await asyncio.sleep(0.05)
        system.on_request_finished(late)
        found = await lookup
        missing = await system.collector.find("cmpl-never", wait_s=0.05)
        await system.stop()
        return found, missing, late

    found, missing, late = run(main())
    assert found is not None and found.id == late.response_id and missing is None


def test_buffers_stay_bounded_under_overload(tmp_path):
    async def main():
        cfg = config(tmp_path, max_interaction_buffer=5, max_feedback_buffer=3, max_quality_scores=4,
                     write_queue_size=8)
        system = ContinuousLearningSystem(cfg)
        await system.start()
        gate = hold_writes(system)
        for _ in range(200):
            system.on_request_finished(finished())
            system.monitor.record("r", "/v1/completions", "POST", 200, 0.01)
        depth = system.collector.writer.queue_depth
        gate.set()
        await barrier(system)
        await system.stop()
        return system, depth

    system, depth = run(main())
    assert len(system.collector.recent) == 5 and len(system.feedback) == 3
    assert len(system.collector.quality_scores()) == 4
    assert depth <= 8 and system.collector.writer.dropped >= 190
    assert system.collector.counts.interactions + system.collector.writer.dropped == 200
    assert system.memory_bytes() < 5 * 4_000 + 3 * 300 + 4 * 32


def test_control_state_survives_a_restart_and_reset_keeps_data(tmp_path):
    async def first_run():
        system = ContinuousLearningSystem(config(tmp_path))
        await system.start()
        system.on_request_finished(finished())
        await system.update_state(paused=True, learning_steps=4)
        await system.stop()

    async def second_run():
        system = ContinuousLearningSystem(config(tmp_path))
        await system.start()
        before = (system.state.paused, system.state.learning_steps, system.total_interactions)
        await system.reset()
        after = (system.state.paused, system.state.learning_steps, system.total_interactions)
        await system.stop()
        return before, after

    run(first_run())
    before, after = run(second_run())
    assert before == (True, 4, 1)
    assert after == (True, 0, 1)

"""The learned quality predictor in the learning system: hidden states in, features held, feedback trains the
readout, its prediction enters the score as it proves accurate, state survives a restart, memory is bounded."""

import asyncio
import os

import pytest
import torch

from aphrodite.continuous_learning import ContinuousLearningSystem, QualityScorer
from aphrodite.continuous_learning.interaction import Choice, Interaction
from aphrodite.continuous_learning.scoring.learned import FILE_NAME, LearnedQualityPredictor
from tests.continuous_learning.fakes import FakeEngine, config, finished

D = 8  # projected hidden-state size in these tests
SMALL = dict(quality_predictor_units=32, quality_predictor_depth=1)  # a small reservoir keeps the tests fast


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(coro):
    return asyncio.run(coro)


async def barrier(system: ContinuousLearningSystem) -> None:
    await system.collector.writer.call(lambda: None)


def states(good: bool, gen: torch.Generator) -> torch.Tensor:
    """(T, D) hidden states whose mean direction says whether the response was good: a learnable signal."""
    t = int(torch.randint(6, 14, (1,), generator=gen))
    direction = torch.ones(D) / D**0.5
    return torch.randn(t, D, generator=gen) + (1.5 if good else -1.5) * direction


def with_states(hidden: torch.Tensor | None, **overrides):
    return finished(hidden_states=None if hidden is None else [hidden], **overrides)


async def feedback(system: ContinuousLearningSystem, response_id: str, satisfaction: float):
    interaction = await system.collector.find(response_id)
    return await system.collector.add_feedback(interaction, satisfaction, None, None)


def test_hidden_states_reach_the_predictor_and_leave_memory(tmp_path):
    async def main():
        system = ContinuousLearningSystem(config(tmp_path, **SMALL), engine=FakeEngine())
        await system.start()
        gen = torch.Generator().manual_seed(0)
        requests = [with_states(states(True, gen)), with_states(states(False, gen)), with_states(None)]
        for r in requests:
            system.on_request_finished(r)
        await barrier(system)
        await system.stop()
        return system, requests

    system, requests = run(main())
    q = system.quality_predictor
    assert system.wants_hidden_states and system.scorer.predictor is q
    assert q.held == 2 and q.report()["input_dim"] == D  # one feature per response that had states
    assert all(system.collector.recent.get(r.response_id).hidden_states is None for r in requests)
    assert q.predict(system.collector.recent.get(requests[0].response_id)) is None  # untrained: no opinion


def test_without_the_predictor_no_hidden_states_are_asked_for_or_kept(tmp_path):
    async def main():
        system = ContinuousLearningSystem(config(tmp_path, quality_predictor="none"))
        await system.start()
        r = with_states(torch.randn(5, D))
        system.on_request_finished(r)
        await barrier(system)
        await system.stop()
        return system, r

    system, r = run(main())
    assert system.quality_predictor is None and not system.wants_hidden_states
    assert system.scorer.predictor is None and system.collector.recent.get(r.response_id).hidden_states is None


def test_feedback_trains_the_readout_once_per_response(tmp_path):
    async def main():
        system = ContinuousLearningSystem(config(tmp_path, **SMALL))
        await system.start()
        gen = torch.Generator().manual_seed(1)
        good, bad, plain = with_states(states(True, gen)), with_states(states(False, gen)), with_states(None)
        for r in (good, bad, plain):
            system.on_request_finished(r)
        await barrier(system)
        await feedback(system, good.response_id, 1.0)
        await feedback(system, good.response_id, 0.5)  # a second opinion on the same response: no retraining
        await feedback(system, bad.response_id, -1.0)
        await feedback(system, plain.response_id, 1.0)  # no hidden states: nothing to learn from
        report = system.quality_predictor.report()
        await system.stop()
        return report

    report = run(main())
    assert report["labels_seen"] == 2 and report["held_features"] == 0 and report["labels_unmatched"] == 2


def train(q: LearnedQualityPredictor, n: int, gen: torch.Generator, start: int = 0) -> None:
    """Capture ``n`` responses in writer-sized batches, then label each (good ones +1, bad ones -1)."""
    for b in range(start, start + n, 16):
        batch = [interaction(f"r{i}", states(i % 2 == 0, gen)) for i in range(b, b + 16)]
        q.observe(batch)
        for i, item in zip(range(b, b + 16), batch):
            item.user_satisfaction = 1.0 if i % 2 == 0 else -1.0
            q.learn(item)


def interaction(rid: str, hidden: torch.Tensor) -> Interaction:
    """Identical texts and timings, so the heuristic signals cannot tell good from bad (and sit mid-scale)."""
    return Interaction(rid, "/v1/completions", [Choice("The capital of France is Paris.", (), "length")],
                       prompt="Capital of France?", completion_tokens=8, total_ms=80.0, ttft_ms=10.0,
                       hidden_states=hidden)


def test_a_learnable_signal_earns_weight_and_moves_the_score(tmp_path):
    q = LearnedQualityPredictor(config(tmp_path, **SMALL))
    scorer = QualityScorer(predictor=q)
    gen = torch.Generator().manual_seed(2)
    train(q, 16, gen)
    early = q.accuracy
    train(q, 144, gen, start=16)
    assert early < 0.5 < q.accuracy  # ramped in over min_labels, earned by prequential skill
    good, bad = interaction("new-good", states(True, gen)), interaction("new-bad", states(False, gen))
    q.observe([good, bad])
    g, b = scorer.explain(good), scorer.explain(bad)
    assert g["prediction"] > 0.7 and b["prediction"] < 0.3
    # same text, same timings: without the predictor both would score the same
    plain = QualityScorer().score(good)
    assert plain == QualityScorer().score(bad)
    assert g["score"] > plain > b["score"]
    assert q.report()["auc"] > 0.9


def test_state_survives_a_restart(tmp_path):
    cfg = config(tmp_path, quality_predictor_save_every=8, **SMALL)
    gen = torch.Generator().manual_seed(3)
    probe = states(True, gen)

    async def session(labels: int) -> tuple[dict, float | None]:
        system = ContinuousLearningSystem(cfg)
        await system.start()
        for i in range(labels):
            r = with_states(states(i % 2 == 0, gen))
            system.on_request_finished(r)
            await feedback(system, r.response_id, 1.0 if i % 2 == 0 else -1.0)
        if labels:
            saved = os.path.join(tmp_path, "learning", FILE_NAME)
            assert os.path.exists(saved)  # saved every 8 labels
            assert os.stat(saved).st_mode & 0o777 == 0o600  # private, like everything in the learning dir
        p = with_states(probe)
        system.on_request_finished(p)
        await barrier(system)
        prediction = system.quality_predictor.predict(system.collector.recent.get(p.response_id))
        report = system.quality_predictor.report()
        await system.stop()
        return report, prediction

    before, predicted_before = run(session(12))
    after, predicted_after = run(session(0))
    assert after["labels_seen"] == before["labels_seen"] == 12
    assert after["weight"] == before["weight"] and predicted_after == pytest.approx(predicted_before, abs=1e-6)


def test_held_features_are_bounded(tmp_path):
    async def main():
        system = ContinuousLearningSystem(config(tmp_path, quality_predictor_max_held=8, **SMALL))
        await system.start()
        requests = [with_states(torch.randn(6, D)) for _ in range(20)]
        for r in requests:
            system.on_request_finished(r)
        await barrier(system)
        await feedback(system, requests[0].response_id, 1.0)  # evicted: too old to learn from
        q = system.quality_predictor
        result = q.held, q.approx_bytes, q.report()["labels_unmatched"], system.memory_bytes()
        await system.stop()
        return result

    held, held_bytes, unmatched, memory = run(main())
    assert held == 8 and unmatched == 1
    assert 0 < held_bytes <= 8 * 4_000 and memory > held_bytes  # counted in the system's memory estimate


def test_a_predictor_failure_never_costs_a_stored_interaction(tmp_path, monkeypatch):
    async def main():
        system = ContinuousLearningSystem(config(tmp_path, **SMALL))
        monkeypatch.setattr(system.quality_predictor, "observe", lambda batch: 1 / 0)
        await system.start()
        r = with_states(torch.randn(6, D))
        system.on_request_finished(r)
        await barrier(system)
        stored = system.store.get_interaction(r.response_id)
        await system.stop()
        return system, stored

    system, stored = run(main())
    assert stored is not None and stored.quality_score is not None
    assert system.failures.total == 1 and "quality predictor" in system.failures.last_reason()


def test_new_hidden_state_size_starts_a_fresh_predictor(tmp_path):
    q = LearnedQualityPredictor(config(tmp_path, **SMALL))
    q.observe([interaction("a", torch.randn(5, D))])
    q.observe([interaction("b", torch.randn(5, D + 4))])  # e.g. restarted with another --hidden-state-dim
    assert q.report()["input_dim"] == D + 4 and q.held == 1


def test_the_server_feeds_the_predictor_and_reports_it(tiny_model_dir, tmp_path):
    """In process, on a real engine: completions carry hidden states to the predictor, feedback trains it, the
    metrics show it and the Prometheus gauge exists."""
    from fastapi.testclient import TestClient

    from aphrodite.endpoints.cli_args import parse_args
    from aphrodite.endpoints.openai.api_server import build_app

    app = build_app(parse_args(["--model", str(tiny_model_dir), "--hidden-state-dim", "16",
                                "--enable-continuous-learning", "--learning-dir", str(tmp_path),
                                "--learning-quality-predictor-units", "32"]))
    with TestClient(app) as client:
        r = client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 4, "ignore_eos": True})
        assert r.status_code == 200
        fb = client.post("/v1/learning/feedback", json={"response_id": r.json()["id"], "user_satisfaction": 1.0})
        assert fb.status_code == 200, fb.text
        report = client.get("/v1/learning/metrics").json()["learning"]["quality_predictor"]
        prometheus = client.get("/metrics").text
    assert report["input_dim"] == 16 and report["labels_seen"] == 1 and report["labels_unmatched"] == 0
    assert "aphrodite:learning_quality_predictor_weight 0.0" in prometheus
    assert (tmp_path / FILE_NAME).exists()  # saved on shutdown


def test_a_deleted_response_leaves_no_held_feature(tmp_path):
    async def main():
        system = ContinuousLearningSystem(config(tmp_path, **SMALL))
        await system.start()
        r = with_states(torch.randn(6, D))
        system.on_request_finished(r)
        await barrier(system)
        held_before = r.response_id in system.quality_predictor._held
        deleted = await system.delete_interaction(r.response_id)
        await system.stop()
        return held_before, deleted, r.response_id in system.quality_predictor._held

    assert run(main()) == (True, True, False)


def test_the_predictor_is_built_on_the_engines_device(tmp_path):
    engine = FakeEngine()
    engine.device = "cuda:0"  # wiring only: nothing runs until hidden states arrive
    system = ContinuousLearningSystem(config(tmp_path, **SMALL), engine=engine)
    assert system.quality_predictor.device == "cuda:0"
    assert ContinuousLearningSystem(config(tmp_path / "b", **SMALL), engine=FakeEngine()).quality_predictor.device \
        == "cpu"  # an engine that names no device: the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the reservoir runs where the model runs")
def test_on_cuda_the_reservoir_and_readout_run_on_the_gpu(tmp_path):
    q = LearnedQualityPredictor(config(tmp_path, **SMALL), device="cuda")
    train(q, 16, torch.Generator().manual_seed(0))
    assert q.model.features([torch.randn(5, D)]).is_cuda and q.model.readout.W.is_cuda
    assert q.labels_seen == 16

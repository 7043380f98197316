"""A full learning disk, through the /v1/learning API: serving goes on, every lost capture is counted, health is
503 ``degraded`` with the reason, nothing that could not be recorded changes anything, and all recovers."""

import types

from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from tests.continuous_learning.fakes import bare_app, config, system_of
from tests.endpoints.test_learning_privacy import flush
from tests.endpoints.test_learning_routes import is_openai_error

MANUAL = {"prompt": "What is 2 + 2?", "response": "4.", "performance_feedback": 0.9}


def dropped_metric(client) -> str:
    text = generate_latest(client.app.state.metrics_registry).decode()
    return next(line for line in text.splitlines() if line.startswith("aphrodite:learning_interactions_dropped_total"))


def test_a_full_disk_loses_nothing_silently_changes_nothing_and_recovers(tmp_path):
    with TestClient(bare_app(config(tmp_path, feedback_wait_s=0.05))) as c:
        s = system_of(c.app)
        kept = c.post("/v1/completions", json={}).json()["id"]
        flush(s)
        s.store.fail_writes = True  # from now on every write fails as on a full disk

        served = [c.post("/v1/completions", json={}) for _ in range(3)]
        assert [r.status_code for r in served] == [200] * 3  # serving goes on
        flush(s)
        assert c.get("/v1/learning/status").json()["system_health"]["dropped_interactions"] == 3
        assert dropped_metric(c).endswith(" 3.0")
        h = c.get("/v1/learning/health")
        assert h.status_code == 503 and h.json()["status"] == "degraded"
        assert "disk is full" in h.json()["reason"] and h.json()["checks"]["store_writable"] is False
        assert c.get("/v1/learning/status").json()["status"] == "degraded"

        refused = [c.post("/v1/learning/feedback", json={"response_id": kept, "user_satisfaction": -1}),
                   c.post("/v1/learning/manual", json=MANUAL),
                   c.post("/v1/learning/learn", json={"interactions": [MANUAL]}),
                   c.post("/v1/learning/control", json={"action": "pause"}),
                   c.post("/v1/learning/control", json={"action": "disable"}),
                   c.delete(f"/v1/learning/interactions/{kept}")]
        for r in refused:
            assert is_openai_error(r, 503)["code"] == "learning_store_unavailable"
        status = c.get("/v1/learning/status").json()
        assert status["paused"] is False and status["learning_enabled"] is True  # nothing changed
        assert status["overview"]["total_interactions"] == 1 and status["overview"]["feedback_count"] == 0
        assert s.collector.recent.get(kept).user_satisfaction is None
        assert s.store.feedback_for(kept) == [] and s.store.get_interaction(kept) is not None

        s.store.fail_writes = False  # space returns
        h = c.get("/v1/learning/health")
        assert h.status_code == 200 and h.json()["status"] == "healthy" and h.json()["reason"] is None
        assert c.post("/v1/learning/control", json={"action": "pause"}).json()["paused"] is True
        assert c.post("/v1/learning/manual", json=MANUAL).status_code == 200
        lost = served[0].json()["id"]  # still in memory: feedback stores it after all
        assert c.post("/v1/learning/feedback", json={"response_id": lost, "user_satisfaction": 1}).status_code == 200
        fresh = c.post("/v1/completions", json={}).json()["id"]
        flush(s)
        assert s.store.get_interaction(fresh) is not None and s.store.get_interaction(lost) is not None
        status = c.get("/v1/learning/status").json()
        assert status["overview"]["total_interactions"] == 4 and status["system_health"]["dropped_interactions"] == 3
        assert s.store.load_state()["paused"] is True


def test_health_is_503_with_the_reason_when_unhealthy(tmp_path):
    with TestClient(bare_app(config(tmp_path))) as c:
        s = system_of(c.app)
        processor = s.processor
        s.processor = types.SimpleNamespace(running=False)
        try:
            h = c.get("/v1/learning/health")
        finally:
            s.processor = processor
        assert h.status_code == 503 and h.json()["status"] == "unhealthy" and "background" in h.json()["reason"]
        h = c.get("/v1/learning/health")
        assert h.status_code == 200 and h.json()["status"] == "healthy"


def test_too_many_recent_failures_is_503_degraded(tmp_path):
    with TestClient(bare_app(config(tmp_path, max_recent_failures=1))) as c:
        s = system_of(c.app)
        s.failures.record("learning step failed: ValueError")
        assert c.get("/v1/learning/health").status_code == 200
        s.failures.record("learning step failed: ValueError")
        h = c.get("/v1/learning/health")
        assert h.status_code == 503 and h.json()["status"] == "degraded"
        assert "2 failures" in h.json()["reason"] and "ValueError" in h.json()["reason"]
        c.post("/v1/learning/control", json={"action": "pause"})
        assert c.get("/v1/learning/health").json()["status"] == "degraded"  # still the worst news first

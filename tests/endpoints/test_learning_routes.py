"""The /v1/learning API on an app wired as ``build_app`` wires it (fake engine, stand-in completions route)."""

import json

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from tests.continuous_learning.fakes import DESIGN_MANUAL_BODY as MANUAL_EXAMPLE
from tests.continuous_learning.fakes import FakeEngine, bare_app, config, system_of

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(tmp_path):
    app = bare_app(config(tmp_path, feedback_wait_s=0.05), FakeEngine(weight_version=2))
    with TestClient(app) as c:
        yield c


def is_openai_error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def test_design_document_examples_are_accepted_verbatim(client):
    r = client.post("/v1/learning/manual", content=MANUAL_EXAMPLE, headers=JSON)
    assert r.status_code == 200, r.text
    ack = r.json()
    assert ack["id"].startswith("manual-") and ack["stored"] is True and ack["eligible"] is True
    assert ack["interaction_type"] == "high_quality_example"
    r = client.post("/v1/learning/control", content='{"action": "disable"}', headers=JSON)
    assert r.status_code == 200 and r.json()["learning_enabled"] is False
    r = client.post("/v1/learning/control", content='{"action": "reset"}', headers=JSON)
    assert r.status_code == 200
    assert client.get("/v1/learning/status").status_code == 200


def test_status_has_the_production_monitoring_shape(client):
    body = client.get("/v1/learning/status").json()
    assert body["status"] == "healthy" and body["learning_enabled"] is True
    assert body["weight_version"] == 2
    overview, health = body["overview"], body["system_health"]
    assert isinstance(overview["total_interactions"], int)
    assert isinstance(overview["success_rate"], float)
    assert overview["current_learning_rate"] == pytest.approx(1e-4)
    assert isinstance(health["background_processing"], bool) and health["background_processing"]
    assert health["recent_failures"] == 0 and isinstance(health["memory_usage_mb"], float)


def test_captured_response_takes_feedback_by_its_id(client):
    response_id = client.post("/v1/completions", json={}).json()["id"]
    r = client.post("/v1/learning/feedback", json={"response_id": response_id, "user_satisfaction": -1.0,
                                                   "corrected_response": "Paris.", "comment": "too long"})
    assert r.status_code == 200, r.text
    fb = r.json()
    assert fb["response_id"] == response_id and fb["id"].startswith("fb-")
    assert fb["quality_score"] < 0.6 and fb["eligible"] is False
    status = client.get("/v1/learning/status").json()
    assert status["overview"]["total_interactions"] == 1 and status["overview"]["feedback_count"] == 1
    assert client.get("/v1/learning/metrics").json()["feedback"]["average_user_satisfaction"] == -1.0
    stored = system_of(client.app).store.feedback_for(response_id)  # committed before the reply
    assert [f.corrected_response for f in stored] == ["Paris."]


def test_unknown_response_id_is_a_404(client):
    err = is_openai_error(client.post("/v1/learning/feedback",
                                      json={"response_id": "chatcmpl-nope", "user_satisfaction": 1}), 404)
    assert err["param"] == "response_id" and err["code"] == "response_not_found"


def test_learn_takes_a_batch(client):
    items = [{"prompt": f"Q{k}?", "response": f"Answer number {k}.", "performance_feedback": k / 4}
             for k in range(5)]
    r = client.post("/v1/learning/learn", json={"interactions": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stored"] == 5 and len(body["data"]) == 5 and body["eligible"] == 2  # 0.75 and 1.0
    assert client.get("/v1/learning/status").json()["overview"]["total_interactions"] == 5


def test_control_actions_show_in_status(client):
    def control(action):
        r = client.post("/v1/learning/control", json={"action": action})
        assert r.status_code == 200, r.text
        return client.get("/v1/learning/status").json()

    assert control("pause")["status"] == "paused"
    assert control("pause")["system_health"]["background_processing"] is False
    assert control("resume")["status"] == "healthy"
    off = control("disable")
    assert off["status"] == "disabled" and off["learning_enabled"] is False
    assert client.post("/v1/completions", json={}).status_code == 200
    assert client.get("/v1/learning/status").json()["overview"]["total_interactions"] == 0  # nothing captured
    err = is_openai_error(client.post("/v1/learning/manual", content=MANUAL_EXAMPLE, headers=JSON), 409)
    assert err["code"] == "learning_disabled" and "enable" in err["message"]
    assert control("enable")["learning_enabled"] is True


def test_new_control_actions_can_be_registered(client):
    async def trigger(system):
        return "triggered"

    system_of(client.app).actions.register("trigger", "Run a learning step now.", trigger)
    assert client.post("/v1/learning/control", json={"action": "trigger"}).json()["message"] == "triggered"
    assert "trigger" in client.get("/v1/learning/config").json()["control_actions"]


def test_metrics_health_and_config(client):
    client.post("/v1/completions", json={})
    m = client.get("/v1/learning/metrics").json()
    assert m["server"]["monitored_requests"] == 1 and m["capture"]["captured"] == 1
    h = client.get("/v1/learning/health")
    assert h.status_code == 200 and h.json()["checks"]["store_writer"] is True
    cfg = client.get("/v1/learning/config").json()["config"]
    assert cfg["interaction_quality_threshold"] == 0.6 and cfg["max_learning_rate_production"] == 1e-4
    text = generate_latest(client.app.state.metrics_registry).decode()
    for name in ("aphrodite:learning_interactions_captured_total", "aphrodite:learning_monitored_requests_total",
                 "aphrodite:learning_weight_version 2.0", "aphrodite:learning_enabled 1.0"):
        assert name in text


BAD_REQUESTS = [
    ("manual", '{"response": "r", "performance_feedback": 0.5}', 422, "prompt"),
    ("manual", '{"prompt": "", "response": "r", "performance_feedback": 0.5}', 422, "prompt"),
    ("manual", '{"prompt": "p", "response": "r"}', 422, "performance_feedback"),
    ("manual", '{"prompt": "p", "response": "r", "performance_feedback": 1.5}', 422, "performance_feedback"),
    ("manual", '{"prompt": "p", "response": "r", "performance_feedback": -0.1}', 422, "performance_feedback"),
    ("manual", '{"prompt": "p", "response": "r", "performance_feedback": "high"}', 422, "performance_feedback"),
    ("manual", '{"prompt": "p", "response": "r", "performance_feedback": NaN}', 422, "performance_feedback"),
    ("manual", '{"prompt": "p", "response": "r", "performance_feedback": 0.5, "interaction_type": "a b"}', 422,
     "interaction_type"),
    ("manual", '{"prompt": "p", "response": "r", "performance_feedbak": 0.5}', 422, None),
    ("manual", '{"prompt": "p", ', 400, None),
    ("manual", '["prompt"]', 422, None),
    ("learn", '{"interactions": []}', 422, "interactions"),
    ("learn", '{}', 422, "interactions"),
    ("learn", '{"interactions": [{"prompt": "p", "response": "r", "performance_feedback": 2}]}', 422,
     "interactions.0.performance_feedback"),
    ("learn", json.dumps({"interactions": [{"prompt": "p", "response": "r", "performance_feedback": 1}] * 1001}),
     422, "interactions"),
    ("feedback", '{"user_satisfaction": 1}', 422, "response_id"),
    ("feedback", '{"response_id": "cmpl-1", "user_satisfaction": 1.5}', 422, "user_satisfaction"),
    ("feedback", '{"response_id": "cmpl-1", "user_satisfaction": -2}', 422, "user_satisfaction"),
    ("feedback", '{"response_id": "cmpl-1"}', 422, "user_satisfaction"),
    ("feedback", '{"response_id": "cmpl-1", "user_satisfaction": 1, "corrected_response": ""}', 422,
     "corrected_response"),
    ("feedback", '{"response_id": "", "user_satisfaction": 1}', 422, "response_id"),
    ("control", '{}', 422, "action"),
    ("control", '{"action": 7}', 422, "action"),
    ("control", '{"action": "explode"}', 400, "action"),
    ("control", '{"action": "trigger"}', 400, "action"),
]


@pytest.mark.parametrize("route,body,status,param", BAD_REQUESTS)
def test_bad_input_is_a_4xx_in_the_openai_shape(client, route, body, status, param):
    err = is_openai_error(client.post(f"/v1/learning/{route}", content=body, headers=JSON), status)
    if param is not None:
        assert err["param"] == param


def test_feedback_can_be_turned_off(tmp_path):
    with TestClient(bare_app(config(tmp_path, enable_response_feedback=False))) as c:
        response_id = c.post("/v1/completions", json={}).json()["id"]
        err = is_openai_error(c.post("/v1/learning/feedback",
                                     json={"response_id": response_id, "user_satisfaction": 1}), 403)
        assert "--learning-enable-response-feedback" in err["message"]


def test_without_continuous_learning_the_routes_are_404_and_nothing_is_captured(tmp_path):
    app = bare_app(None)
    with TestClient(app) as c:
        assert c.post("/v1/completions", json={}).status_code == 200
        for method, path in (("GET", "status"), ("GET", "metrics"), ("GET", "health"), ("GET", "config"),
                             ("POST", "manual"), ("POST", "learn"), ("POST", "feedback"), ("POST", "control")):
            is_openai_error(c.request(method, f"/v1/learning/{path}", content=MANUAL_EXAMPLE, headers=JSON), 404)
        assert app.state.request_observers == [] and app.state.lifecycle == []
        assert "aphrodite:learning" not in generate_latest(app.state.metrics_registry).decode()
    assert not (tmp_path / "learning").exists()


def test_attaching_twice_is_refused(tmp_path):
    from aphrodite.endpoints.openai.continuous_learning_routes import attach_continuous_learning

    app = bare_app(config(tmp_path))
    with pytest.raises(RuntimeError, match="already attached"):
        attach_continuous_learning(app, app.state.engine, config(tmp_path))


def test_versions_lists_what_serves_and_a_version_only_goes_to_rollback(client):
    r = client.get("/v1/learning/versions")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["serving"] == 2 and body["data"][0]["version"] == 0
    err = is_openai_error(client.post("/v1/learning/control", json={"action": "pause", "version": 1}), 400)
    assert err["param"] == "version"
    is_openai_error(client.post("/v1/learning/control", json={"action": "rollback", "version": -1}), 422)

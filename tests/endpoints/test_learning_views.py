"""The operator's views (timeline, curves, interactions, adapter download) and the console's files, in process:
typed in the OpenAPI schema, answering what the store holds, 4xx in the OpenAI shape for a client mistake."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.continuous_learning.fakes import FakeEngine, bare_app, config


@pytest.fixture
def client(tmp_path):
    app = bare_app(config(tmp_path, feedback_wait_s=0.05), FakeEngine())
    with TestClient(app) as c:
        yield c


def test_routes_are_typed_in_the_openapi_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path, model in [("/v1/learning/versions", "VersionList"), ("/v1/learning/timeline", "TimelineList"),
                        ("/v1/learning/curves", "LearningCurves"), ("/v1/learning/interactions", "InteractionList")]:
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/" + model), path
    adapter = paths["/v1/learning/versions/{version}/adapter"]["get"]["responses"]["200"]["content"]
    assert "application/x-tar" in adapter
    assert "/console" not in paths  # the page is not an API


def test_interactions_and_curves_show_what_was_stored(client):
    served = client.post("/v1/completions").json()["id"]
    assert client.post("/v1/learning/feedback", json={"response_id": served, "user_satisfaction": -0.5,
                                                      "comment": "wrong"}).status_code == 200
    manual = client.post("/v1/learning/manual", json={"prompt": "Mail me at a@b.example", "response": "Done.",
                                                      "performance_feedback": 0.9}).json()["id"]
    rows = client.get("/v1/learning/interactions", params={"limit": 5}).json()["data"]
    assert [r["id"] for r in rows] == [manual, served]
    assert "a@b.example" not in rows[0]["prompt"]  # as stored: PII redacted
    assert rows[1]["feedback"]["user_satisfaction"] == -0.5 and rows[1]["feedback"]["comment"] == "wrong"
    curves = client.get("/v1/learning/curves", params={"window_s": 600, "buckets": 10}).json()
    assert curves["bucket_s"] == 60 and curves["versions"] == []
    assert [(b["count"], b["mean_rating"]) for b in curves["feedback"]] == [(1, -0.5)]
    assert client.get("/v1/learning/timeline").json() == {"object": "list", "data": []}


@pytest.mark.parametrize("path, status", [("/v1/learning/interactions?limit=0", 422),
                                          ("/v1/learning/curves?window_s=1", 422),
                                          ("/v1/learning/versions/0/adapter", 404),
                                          ("/v1/learning/versions/7/adapter", 404),
                                          ("/console/static/secret.py", 404)])
def test_client_mistakes_are_openai_shaped(client, path, status):
    r = client.get(path)
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_console_files_are_served_with_a_strict_content_policy(client):
    page = client.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name in ("console.js", "plot.js", "console.css"):
        assert f"/console/static/{name}" in page.text
        assert client.get(f"/console/static/{name}").status_code == 200
    assert "http" not in client.get("/console/static/console.js").text.replace("http://www.w3.org", "")

"""The request-monitoring middleware: pure ASGI, mounted once, records only the monitored endpoints."""

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from starlette.middleware.base import BaseHTTPMiddleware

from aphrodite.endpoints.middleware import ContinuousLearningMiddleware, setup_continuous_learning_middleware
from tests.continuous_learning.fakes import bare_app, config, system_of


@pytest.fixture
def app(tmp_path) -> FastAPI:
    app = bare_app(config(tmp_path, monitored_endpoints="/v1/completions,/v1/chat/completions"))

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        async def chunks():
            for k in range(3):
                yield f"data: {k}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.get("/other")
    async def other() -> dict:
        return {}

    return app


def test_mounted_once_and_shared(app):
    system = system_of(app)
    first = app.state.continuous_learning_middleware
    assert setup_continuous_learning_middleware(app, system, system.config) is first
    assert len(app.user_middleware) == 1
    assert isinstance(first, ContinuousLearningMiddleware) and not isinstance(first, BaseHTTPMiddleware)


def test_records_monitored_requests_streamed_or_not(app):
    monitor = system_of(app).monitor
    with TestClient(app) as c:
        assert c.post("/v1/completions", json={}).status_code == 200
        r = c.post("/v1/chat/completions", json={})
        assert r.text == "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: [DONE]\n\n"  # passed through untouched
        c.get("/other")
    assert monitor.by_endpoint == {"/v1/completions": [1, 0], "/v1/chat/completions": [1, 0]}
    assert monitor.requests == 2 and len(monitor.latencies_ms) == 2
    records = [(f.endpoint, f.method, f.status_code, f.user_satisfaction) for f in system_of(app).feedback]
    assert records == [("/v1/completions", "POST", 200, None), ("/v1/chat/completions", "POST", 200, None)]


def test_counts_client_errors_and_crashes(tmp_path):
    app = bare_app(config(tmp_path, monitored_endpoints="/v1/completions,/boom"))

    @app.post("/boom")
    async def boom() -> dict:
        raise RuntimeError("bug")

    monitor = system_of(app).monitor
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/boom").status_code == 500
    assert monitor.by_endpoint == {"/boom": [1, 1]} and monitor.success_rate == 0.0


def test_monitoring_off_mounts_nothing(tmp_path):
    app = bare_app(config(tmp_path, enable_request_monitoring=False))
    assert app.user_middleware == [] and not hasattr(app.state, "continuous_learning_middleware")

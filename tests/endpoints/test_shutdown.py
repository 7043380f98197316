"""Graceful shutdown: on SIGTERM under load every stream in flight finishes, new requests are refused (503 or
connection refused), and the process exits within its timeout."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
from fastapi.testclient import TestClient

from aphrodite.endpoints.cli_args import ServerConfig
from aphrodite.endpoints.security import install_security
from tests.continuous_learning.fakes import bare_app
from tests.server_process import RemoteServer

SHUTDOWN_TIMEOUT_S = 20


def test_draining_app_answers_503_in_the_openai_shape(tmp_path):
    app = bare_app(None)
    install_security(app, ServerConfig(), learning=False, env={})
    with TestClient(app) as client:
        assert client.post("/v1/completions", json={}).status_code == 200
        app.state.drain.draining = True
        r = client.post("/v1/completions", json={})
        assert r.status_code == 503 and r.json()["error"]["code"] == "server_shutting_down"
        assert client.get("/health").status_code == 503


def refused_or_503(url: str) -> str:
    """What a new client gets from a shutting-down server: "503" or "refused" (anything else fails)."""
    try:
        r = httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1}, timeout=5)
    except httpx.TransportError:
        return "refused"
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "server_shutting_down"
    return "503"


def test_sigterm_under_load_finishes_every_stream_refuses_new_requests_and_exits(tiny_model_dir, tmp_path):
    server = RemoteServer(["--model", str(tiny_model_dir), "--max-model-len", "256",
                           "--shutdown-timeout-s", str(SHUTDOWN_TIMEOUT_S)], log_path=tmp_path / "server.log")
    streams, started = 8, threading.Barrier(8 + 1, timeout=60)
    results: list[list[str] | BaseException] = []

    def stream(k: int) -> None:
        body = {"prompt": f"Hello {k}", "max_tokens": 200, "ignore_eos": True, "stream": True}
        try:
            with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
                lines = r.iter_lines()
                got = [next(line for line in lines if line.startswith("data: {"))]
                started.wait()
                got += [line for line in lines if line]
            results.append(got)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(streams)]
    try:
        for t in threads:
            t.start()
        started.wait()  # every stream is mid-flight
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the signal has been handled
            try:
                health = httpx.get(server.url + "/health", timeout=5).status_code
            except httpx.TransportError:
                health = None
            if health != 200:
                break
        outcome = refused_or_503(server.url)
        for t in threads:
            t.join(60)
        assert len(results) == streams and not [r for r in results if isinstance(r, BaseException)], results
        for lines in results:
            assert lines[-1] == "data: [DONE]"
            chunks = [json.loads(line[6:]) for line in lines[:-1]]
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # ran to its end, not cut short
        start = time.monotonic()
        # uvicorn shuts down cleanly, then re-raises the signal it caught: the exit status is "killed by SIGTERM"
        assert server.proc.wait(timeout=SHUTDOWN_TIMEOUT_S + 15) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in (tmp_path / "server.log").read_text()
        print(f"{streams} streams finished; a new request during shutdown: {outcome}; "
              f"exited {time.monotonic() - start:.1f}s after the last stream")
    finally:
        server.stop()

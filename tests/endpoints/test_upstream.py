"""``--upstream``: a learning front before another server (ours, which speaks vLLM's adapter routes). It forwards
plain and streamed requests, captures them, takes feedback on the upstream's ids, learns on its own copy of the
base model and loads each promoted version on the upstream, whose answers then come from it."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from aphrodite.endpoints.cli_args import parse_args
from aphrodite.endpoints.openai.api_server import build_app
from tests.polling import until
from tests.server_process import RemoteServer

LOCAL = ("127.0.0.1", 50000)
HEADER = "x-aphrodite-weight-version"
CHAT = {"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 5, "temperature": 0,
        "ignore_eos": True}


@pytest.fixture(scope="module")
def upstream(tiny_model_dir):
    with RemoteServer(["--model", str(tiny_model_dir), "--served-model-name", "tiny", "--max-model-len", "128"]) as s:
        yield s




def test_the_front_forwards_captures_learns_and_pushes_versions(upstream, tiny_model_dir, tmp_path):
    app = build_app(parse_args([
        "--model", str(tiny_model_dir), "--served-model-name", "tiny", "--max-model-len", "128",
        "--upstream", upstream.url, "--enable-continuous-learning", "--learning-dir", str(tmp_path / "learning"),
        "--learning-background-interval", "3600", "--learning-min-interactions", "1",
            "--learning-canary-share", "0",  # a promotion serves everyone at once (canaries: test_canary_server)
        "--learning-quality-predictor", "none", "--no-learning-learner-protect-shipped-facts",
        "--learning-learner-worker", "thread"]))
    import httpx

    direct = httpx.post(upstream.url + "/v1/chat/completions", json=CHAT, timeout=30).json()
    with TestClient(app, client=LOCAL) as client:
        r = client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and r.headers[HEADER] == "0"
        answer = r.json()
        assert answer["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
        lines = [ln for ln in client.post("/v1/chat/completions", json={**CHAT, "stream": True}).iter_lines() if ln]
        assert lines[-1] == "data: [DONE]"
        streamed = "".join(json.loads(ln[6:])["choices"][0]["delta"].get("content") or ""
                           for ln in lines[:-1] if json.loads(ln[6:])["choices"])
        assert streamed == answer["choices"][0]["message"]["content"]
        status = lambda: client.get("/v1/learning/status").json()  # noqa: E731
        until("both exchanges to be captured", lambda: status()["overview"]["total_interactions"] >= 2, 30)

        fb = client.post("/v1/learning/feedback", json={"response_id": answer["id"], "user_satisfaction": 1.0,
                                                        "corrected_response": "Hello! Pellmor is lovely."})
        assert fb.status_code == 200, fb.text  # feedback on the upstream's response id
        r = client.post("/v1/learning/control", json={"action": "trigger"})
        assert "started" in r.json()["message"], r.text
        until("version 1 to be promoted", lambda: status()["weight_version"] == 1, 120)
        models = until("the upstream to list it", lambda: [m["id"] for m in httpx.get(
            upstream.url + "/v1/models", timeout=30).json()["data"]] if client.app.state.upstream.adapter else [], 30)
        assert "learned-v1" in models
        r = client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and int(r.headers[HEADER]) > 0  # the upstream answered with the pushed version
        assert (tmp_path / "learning" / "export" / "learned-v1" / "adapter_config.json").is_file()


def test_the_front_turns_canaries_off(upstream, tiny_model_dir, tmp_path):
    """The front forwards every request to the adapter it pushed last, so a canary would get no traffic and
    wait canary_max_seconds: with --upstream a promoted version is pushed at once (the default share is 0.1)."""
    app = build_app(parse_args([
        "--model", str(tiny_model_dir), "--served-model-name", "tiny", "--max-model-len", "128",
        "--upstream", upstream.url, "--enable-continuous-learning", "--learning-dir", str(tmp_path / "learning"),
        "--learning-quality-predictor", "none", "--learning-learner-worker", "thread"]))
    assert app.state.continuous_learning.config.canary_share == 0.0

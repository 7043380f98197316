"""The real server on a loopback port, driven by the official openai client and raw HTTP."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.server_process import RemoteServer


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with RemoteServer(["--model", str(tiny_model_dir), "--served-model-name", "tiny", "--max-model-len", "128"]) as s:
        yield s


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)


def test_models_and_health(server, client) -> None:
    assert httpx.get(server.url + "/health").status_code == 200
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"]


def test_chat_non_streaming(client) -> None:
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello!"}],
                                       max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion"
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason == "length"
    assert r.usage.completion_tokens == 6 and r.usage.total_tokens == r.usage.prompt_tokens + 6


def test_chat_streaming_matches_non_streaming(client) -> None:
    kw = dict(model="tiny", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
              max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
    full = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 8 and not chunks[-1].choices


def test_completion_streaming_and_n(client) -> None:
    full = client.completions.create(model="tiny", prompt="One two three", max_tokens=5, temperature=0,
                                     extra_body={"ignore_eos": True})
    assert full.object == "text_completion" and full.usage.completion_tokens == 5
    stream = client.completions.create(model="tiny", prompt="One two three", max_tokens=5, temperature=0,
                                       stream=True, extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].text for c in stream) == full.choices[0].text
    many = client.completions.create(model="tiny", prompt=["Hello", "Paris is"], max_tokens=3, n=2, seed=7,
                                     extra_body={"ignore_eos": True})
    assert sorted(c.index for c in many.choices) == [0, 1, 2, 3]
    assert many.usage.completion_tokens == 12


def test_echo_with_logprobs_scores_the_prompt(client) -> None:
    r = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=0, echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == "The quick brown fox"
    assert lp.token_logprobs[0] is None and all(x < 0 for x in lp.token_logprobs[1:])
    assert len(lp.tokens) == r.usage.prompt_tokens and r.usage.completion_tokens == 0
    assert "".join(lp.tokens) == "The quick brown fox"


def test_stop_strings_through_the_api(client) -> None:
    base = client.completions.create(model="tiny", prompt="One two three four five six seven", max_tokens=12,
                                     temperature=0, extra_body={"ignore_eos": True}).choices[0].text
    stop = base[5:7]
    r = client.completions.create(model="tiny", prompt="One two three four five six seven", max_tokens=12,
                                  temperature=0, stop=[stop], extra_body={"ignore_eos": True})
    assert r.choices[0].text == base[:base.index(stop)] and r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("body,status,param", [
    ({"model": "nope", "prompt": "x"}, 404, "model"),
    ({"prompt": "x", "temperature": "hot"}, 422, "temperature"),
    ({"prompt": "x", "max_tokens": -1}, 422, "max_tokens"),
    ({"prompt": "x", "n": 100}, 422, "n"),
    ({"prompt": "hello " * 400}, 400, "prompt"),
    ({"prompt": "x", "max_tokens": 1000}, 400, "max_tokens"),
    ({"prompt": []}, 422, "prompt"),
    ({}, 422, "prompt"),
])
def test_completion_client_errors_have_openai_shape(server, body, status, param) -> None:
    r = httpx.post(server.url + "/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param


def test_chat_client_errors_and_unknown_route(server, client) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="tiny", messages=[])
    bad_json = httpx.post(server.url + "/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]["message"]
    image = httpx.post(server.url + "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert image.status_code == 400
    missing = httpx.get(server.url + "/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_raw_sse_ends_with_done(server) -> None:
    with httpx.stream("POST", server.url + "/v1/completions",
                      json={"prompt": "Hello", "max_tokens": 3, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    json.loads(lines[0][6:])


def test_metrics_are_prometheus_text_with_aphrodite_names(server, client) -> None:
    client.completions.create(model="tiny", prompt="Hello", max_tokens=2)
    text = httpx.get(server.url + "/metrics").text
    for name in ("aphrodite:num_requests_running", "aphrodite:num_requests_waiting", "aphrodite:prompt_tokens_total",
                 "aphrodite:generation_tokens_total", "aphrodite:time_to_first_token_seconds_bucket",
                 "aphrodite:inter_token_latency_seconds_bucket", "aphrodite:e2e_request_latency_seconds_bucket"):
        assert name in text, name


def test_api_key_is_required_when_set(tiny_model_dir, tmp_path) -> None:
    with RemoteServer(["--model", str(tiny_model_dir), "--api-key", "sk-secret",
                       "--secret-file", str(tmp_path / "secret")], env={"APHRODITE_API_KEYS": "sk-env"}) as s:
        assert httpx.get(s.url + "/v1/models").status_code == 401
        wrong = httpx.get(s.url + "/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        ok = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-secret", max_retries=0)
        assert ok.models.list().data
        from_env = httpx.get(s.url + "/v1/models", headers={"Authorization": "Bearer sk-env"})
        assert from_env.status_code == 200  # a key from the environment stays out of `ps`
        assert httpx.get(s.url + "/health").status_code == 200


def test_bad_flag_values_are_usage_errors() -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "aphrodite.endpoints.openai.api_server", "--block-size", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "block_size must be positive" in r.stderr


def test_observers_asking_for_hidden_states_get_them(tiny_model_dir) -> None:
    """In process: an observer with ``wants_hidden_states`` receives (tokens, d) states per choice."""
    from fastapi.testclient import TestClient

    from aphrodite.endpoints.cli_args import parse_args
    from aphrodite.endpoints.openai.api_server import build_app

    class Recorder:
        wants_hidden_states = True

        def __init__(self) -> None:
            self.seen = []

        def on_request_finished(self, req) -> None:
            self.seen.append(req)

    app = build_app(parse_args(["--model", str(tiny_model_dir), "--hidden-state-dim", "16"]))
    rec = Recorder()
    app.state.request_observers.append(rec)
    with TestClient(app) as client:
        r = client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 5, "ignore_eos": True, "n": 2})
        assert r.status_code == 200
    (req,) = rec.seen
    assert req.response_id == r.json()["id"] and len(req.hidden_states) == 2
    assert all(tuple(h.shape) == (5, 16) for h in req.hidden_states)
    # every choice reports its sampled tokens' mean log-probability, asked for or not
    assert len(req.mean_logprobs) == 2 and all(lp < 0 for lp in req.mean_logprobs)


def test_client_disconnect_aborts_the_request_and_frees_the_batch(server) -> None:
    import re
    import time

    def metric(pattern: str) -> float:
        m = re.search(pattern + r" (\S+)$", httpx.get(server.url + "/metrics").text, re.M)
        return float(m.group(1)) if m else 0.0

    running = r'^aphrodite:num_requests_running\{[^}]*\}'
    finished = r'^aphrodite:request_success_total\{finished_reason="length"[^}]*\}'
    finished_before = metric(finished)
    body = {"prompt": "Hello", "max_tokens": 120, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # generation has started; leave mid-stream
    deadline = time.monotonic() + 10
    while metric(running) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(running) == 0
    assert metric(finished) == finished_before  # it was aborted, not run to its 120 tokens

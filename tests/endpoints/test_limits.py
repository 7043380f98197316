"""Bounded input on the real app (tiny checkpoint, in process): body size before parsing, request shape and
text length before tokenizing, tokenizing off the event loop, undecodable text, short error quotes, opt-out."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from aphrodite.endpoints.cli_args import parse_args
from tests.continuous_learning.fakes import Recorder

MAX_MODEL_LEN = 64
LIMIT = 4096


@pytest.fixture(scope="module")
def app(tiny_model_dir):
    from aphrodite.endpoints.openai.api_server import build_app

    app = build_app(parse_args(["--model", str(tiny_model_dir), "--max-model-len", str(MAX_MODEL_LEN),
                                "--max-request-body-bytes", str(LIMIT), "--max-prompts-per-request", "4",
                                "--max-choices-per-request", "6", "--max-stop-sequences", "2",
                                "--max-stop-sequence-chars", "8", "--max-stop-token-ids", "3"]))
    app.state.recorder = Recorder()
    app.state.request_observers.append(app.state.recorder)
    return app


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def error_of(r, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def test_body_over_the_limit_is_413_before_parsing(client):
    big = b'{"prompt": "' + b"x" * LIMIT + b'"}'
    err = error_of(client.post("/v1/completions", content=big, headers={"content-type": "application/json"}), 413)
    assert err["code"] == "request_too_large"

    def chunks():  # no Content-Length: counted as it streams in
        yield b'{"prompt": "'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}'

    error_of(client.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("body,param", [
    ({"prompt": ["a"] * 5}, "prompt"),
    ({"prompt": ["a", "b"], "n": 4}, "n"),
    ({"prompt": "a", "stop": ["x", "y", "z"]}, "stop"),
    ({"prompt": "a", "stop": "x" * 9}, "stop"),
    ({"prompt": "a", "stop_token_ids": [1, 2, 3, 4]}, "stop_token_ids"),
    ({"prompt": "word " * 300}, "prompt"),  # 1,500 characters > 64 tokens x 16
    ({"prompt": [1, 4093862163800112128]}, "prompt"),  # a token id outside the vocabulary (found by fuzzing)
    ({"prompt": [[1, 2], [-1]]}, "prompt"),
])
def test_request_shape_bounds(client, body, param):
    err = error_of(client.post("/v1/completions", json={"max_tokens": 1, **body}), 400)
    assert err["param"] == param


def test_chat_text_is_bounded_before_tokenizing(client):
    messages = [{"role": "user", "content": "word " * 150}, {"role": "user", "content": "word " * 150}]
    err = error_of(client.post("/v1/chat/completions", json={"messages": messages}), 400)
    assert err["param"] == "messages" and err["code"] == "context_length_exceeded"


def test_tokenizing_runs_off_the_event_loop(app, client, monkeypatch):
    tok = app.state.engine.tokenizer
    threads = []
    original = tok.encode

    def encode(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(tok, "encode", encode)
    assert client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 1}).status_code == 200
    assert client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                     "max_tokens": 1}).status_code == 200
    assert len(threads) >= 2 and all(name.startswith("tokenize") for name in threads)


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", '{"prompt": "a\\ud800b", "max_tokens": 1}'),
    ("/v1/completions", '{"prompt": ["ok", "\\udfff"], "max_tokens": 1}'),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "\\ud800"}]}'),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud800"}]}]}'),
])
def test_lone_surrogate_is_400(client, path, body):
    err = error_of(client.post(path, content=body, headers={"content-type": "application/json"}), 400)
    assert "Unicode" in err["message"]


def test_invalid_utf8_body_is_400(client):
    r = client.post("/v1/completions", content=b'{"prompt": "\xff\xfe"}', headers={"content-type": "application/json"})
    error_of(r, 400)


def test_errors_quote_a_short_prefix_of_the_input(client):
    name = "m" * 3000
    err = error_of(client.post("/v1/completions", json={"model": name, "prompt": "x"}), 404)
    assert len(err["message"]) < 200 and "m" * 64 in err["message"] and "m" * 65 not in err["message"]


def test_store_false_and_no_learn_header_are_not_told_to_observers(app, client):
    seen = app.state.recorder.seen
    before = len(seen)
    body = {"prompt": "Hello", "max_tokens": 1}
    kept = client.post("/v1/completions", json=body).json()["id"]
    client.post("/v1/completions", json={**body, "store": False})
    client.post("/v1/completions", json=body, headers={"x-aphrodite-no-learn": "1"})
    chunks = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                       "max_tokens": 1, "stream": True, "store": False})
    assert chunks.text.rstrip().endswith("data: [DONE]")
    assert [r.response_id for r in seen[before:]] == [kept]



def test_an_unknown_field_name_is_quoted_short(tmp_path):
    from tests.continuous_learning.fakes import bare_app, config

    with TestClient(bare_app(config(tmp_path))) as client:
        r = client.post("/v1/learning/manual", json={"prompt": "p", "response": "r", "performance_feedback": 1,
                                                     "k" * 5000: 1})
    err = error_of(r, 422)
    assert len(err["param"]) <= 67 and len(err["message"]) < 200

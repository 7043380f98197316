"""Continuous learning through the real server: capture over HTTP, feedback by id, restart and ``kill -9``."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import openai

from tests.continuous_learning.fakes import DESIGN_MANUAL_BODY
from tests.server_process import RemoteServer

MANUAL_EXAMPLE = json.loads(DESIGN_MANUAL_BODY)
KEY = "sk-test"


def start(model_dir, learning_dir) -> RemoteServer:
    return RemoteServer(["--model", str(model_dir), "--served-model-name", "tiny", "--max-model-len", "128",
                         "--enable-continuous-learning", "--learning-dir", str(learning_dir)])


def client(server: RemoteServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def get(server: RemoteServer, path: str) -> dict:
    r = httpx.get(server.url + path, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def post(server: RemoteServer, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=10)


def wait_stored(server: RemoteServer, n: int) -> None:
    deadline = time.monotonic() + 10
    while get(server, "/v1/learning/metrics")["capture"]["stored"] < n:
        assert time.monotonic() < deadline, "captured interactions were not written"
        time.sleep(0.05)


def serve_traffic(c: openai.OpenAI) -> dict[str, str]:
    """One request of each kind; returns response id -> text the client saw."""
    kw = dict(model="tiny", max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    seen = {}
    r = c.completions.create(prompt="Paris is", **kw)
    seen[r.id] = r.choices[0].text
    chunks = list(c.completions.create(prompt="One two", stream=True, **kw))
    seen[chunks[0].id] = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    r = c.chat.completions.create(messages=[{"role": "user", "content": "Hi"}], **kw)
    seen[r.id] = r.choices[0].message.content
    chunks = list(c.chat.completions.create(messages=[{"role": "user", "content": "Hello"}], stream=True, **kw))
    seen[chunks[0].id] = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    return seen


def test_capture_feedback_and_durability_across_kill_and_restart(tiny_model_dir, tmp_path):
    learning_dir = tmp_path / "learning"
    with start(tiny_model_dir, learning_dir) as server:
        seen = serve_traffic(client(server))
        ids = list(seen)
        assert [i.split("-")[0] for i in ids] == ["cmpl", "cmpl", "chatcmpl", "chatcmpl"]
        for response_id, satisfaction in zip(ids[:3], (1.0, -1.0, 0.5)):  # acknowledged = committed
            r = post(server, "/v1/learning/feedback", {"response_id": response_id,
                                                       "user_satisfaction": satisfaction})
            assert r.status_code == 200, r.text
        manual = post(server, "/v1/learning/manual", MANUAL_EXAMPLE).json()["id"]
        assert post(server, "/v1/learning/control", {"action": "pause"}).status_code == 200
        wait_stored(server, 5)
        server.kill()

    db = sqlite3.connect(learning_dir / "learning.db")
    rows = dict(db.execute("SELECT id, choices FROM interactions"))
    assert set(rows) == {*ids, manual}
    for response_id, text in seen.items():  # what the client saw, streamed or not
        assert json.loads(rows[response_id])[0]["text"] == text
    hashes = {h for (h,) in db.execute("SELECT api_key_hash FROM interactions WHERE id != ?", (manual,))}
    assert hashes == {None}  # no keys configured: the client's bearer token is not an identity
    db.close()
    assert KEY.encode() not in (learning_dir / "learning.db").read_bytes()

    with start(tiny_model_dir, learning_dir) as server:
        status = get(server, "/v1/learning/status")
        assert status["status"] == "paused"  # the acknowledged control action survived the kill
        assert status["overview"]["total_interactions"] == 5 and status["overview"]["feedback_count"] == 3
        assert status["weight_version"] == 0
        r = post(server, "/v1/learning/feedback", {"response_id": ids[3], "user_satisfaction": 1})
        assert r.status_code == 200 and r.json()["eligible"] is True  # found in the store after restart
        late = client(server).completions.create(model="tiny", prompt="Hi", max_tokens=3,
                                                 extra_body={"ignore_eos": True}).id
        # graceful stop (SIGINT) right away: the queued capture is written on shutdown

    with start(tiny_model_dir, learning_dir) as server:
        overview = get(server, "/v1/learning/status")["overview"]
        assert overview["total_interactions"] == 6 and overview["feedback_count"] == 4
        assert post(server, "/v1/learning/feedback", {"response_id": late, "user_satisfaction": 0}).status_code == 200
        assert "aphrodite:learning_stored_interactions 6.0" in httpx.get(server.url + "/metrics").text

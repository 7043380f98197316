"""Privacy through the /v1/learning API: PII is redacted before it is stored, the learning dir is private, and an
interaction can be deleted with its feedback."""

import os
import types

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from aphrodite.continuous_learning.config import add_learning_cli_args, learning_config_from_args
from tests.continuous_learning.fakes import FakeEngine, bare_app, config, finished, system_of
from tests.endpoints.test_learning_routes import is_openai_error

PII_PROMPT = "I am jo@example.com, card 4111 1111 1111 1111, phone +44 20 7946 0958"


def flush(system) -> None:
    """Wait until everything captured so far has been written (the writer runs jobs in order)."""
    system.collector.writer.submit(lambda: None).result(10)


def capture(client, system, **fields) -> str:
    request = finished(**fields)
    client.portal.call(system.on_request_finished, request)
    flush(system)
    return request.response_id


@pytest.fixture
def client(tmp_path):
    with TestClient(bare_app(config(tmp_path, feedback_wait_s=0.05), FakeEngine())) as c:
        yield c


def test_pii_never_reaches_the_store(client):
    s = system_of(client.app)
    rid = capture(client, s, prompt=PII_PROMPT, text="Write to help@example.org or call 555-123-4567.")
    stored = s.store.get_interaction(rid)
    assert stored.prompt == "I am [EMAIL], card [CARD], phone [PHONE]"
    assert stored.completion == "Write to [EMAIL] or call [PHONE]." and not stored.choices[0].token_ids
    r = client.post("/v1/learning/feedback", json={"response_id": rid, "user_satisfaction": -1,
                                                   "corrected_response": "Mail 10.1.2.3 admin, SSN 123-45-6789",
                                                   "comment": "from jo@example.com"})
    assert r.status_code == 200, r.text
    [fb] = s.store.feedback_for(rid)
    assert (fb.corrected_response, fb.comment) == ("Mail [IP] admin, SSN [ID]", "from [EMAIL]")
    ack = client.post("/v1/learning/manual", json={"prompt": PII_PROMPT, "response": "Noted, jo@example.com.",
                                                   "performance_feedback": 0.9}).json()
    manual = s.store.get_interaction(ack["id"])
    assert (manual.prompt, manual.completion) == ("I am [EMAIL], card [CARD], phone [PHONE]", "Noted, [EMAIL].")
    text = generate_latest(client.app.state.metrics_registry).decode()
    assert 'aphrodite:learning_pii_redactions_total{kind="email"} 5.0' in text
    assert 'aphrodite:learning_pii_redactions_total{kind="card"} 2.0' in text


def test_redaction_can_be_turned_off(tmp_path):
    with TestClient(bare_app(config(tmp_path, redact_pii=False))) as c:
        s = system_of(c.app)
        rid = capture(c, s, prompt=PII_PROMPT)
        assert s.store.get_interaction(rid).prompt == PII_PROMPT


def test_the_flag_turns_redaction_off():
    import argparse

    p = argparse.ArgumentParser()
    add_learning_cli_args(p)
    assert learning_config_from_args(p.parse_args(["--enable-continuous-learning"])).redact_pii is True
    off = p.parse_args(["--enable-continuous-learning", "--no-learning-redact-pii"])
    assert learning_config_from_args(off).redact_pii is False


def test_the_learning_dir_and_its_files_are_private(client, tmp_path):
    capture(client, system_of(client.app))
    learning = tmp_path / "learning"
    assert os.stat(learning).st_mode & 0o777 == 0o700
    files = sorted(p.name for p in learning.iterdir())
    assert {"learning.db", "learning.db-wal", "learning.db-shm"} <= set(files)
    assert {name: os.stat(learning / name).st_mode & 0o777 for name in files} == {name: 0o600 for name in files}


def test_delete_removes_an_interaction_and_its_feedback_everywhere(client):
    s = system_of(client.app)
    forgotten: list[list[str]] = []
    s.learner = types.SimpleNamespace(forget=forgotten.append)
    rid = client.post("/v1/completions", json={}).json()["id"]
    kept = client.post("/v1/completions", json={}).json()["id"]
    assert client.post("/v1/learning/feedback", json={"response_id": rid, "user_satisfaction": 1,
                                                      "comment": "good"}).status_code == 200
    r = client.delete(f"/v1/learning/interactions/{rid}")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": rid, "object": "learning.interaction.deleted", "deleted": True}
    assert s.store.get_interaction(rid) is None and s.store.feedback_for(rid) == []
    assert s.collector.recent.get(rid) is None and all(f.request_id != rid for f in s.feedback)
    assert forgotten == [[rid]]
    status = client.get("/v1/learning/status").json()["overview"]
    assert (status["total_interactions"], status["feedback_count"]) == (1, 0)
    assert s.store.get_interaction(kept) is not None
    err = is_openai_error(client.delete(f"/v1/learning/interactions/{rid}"), 404)
    assert err["code"] == "interaction_not_found" and err["param"] == "interaction_id"
    is_openai_error(client.post("/v1/learning/feedback", json={"response_id": rid, "user_satisfaction": 1}), 404)
    assert forgotten == [[rid]]
    long_id = "x" * 10_000
    err = is_openai_error(client.delete(f"/v1/learning/interactions/{long_id}"), 422)
    assert long_id not in err["message"]


def test_delete_awaits_an_async_forget(client):
    s = system_of(client.app)
    forgotten: list[list[str]] = []

    async def forget(ids):
        forgotten.append(ids)

    s.learner = types.SimpleNamespace(forget=forget)
    rid = client.post("/v1/completions", json={}).json()["id"]
    assert client.delete(f"/v1/learning/interactions/{rid}").status_code == 200
    assert forgotten == [[rid]]


def test_large_curated_examples_cannot_grow_the_store_past_its_byte_bound(tmp_path):
    with TestClient(bare_app(config(tmp_path, store_max_bytes=300_000))) as c:
        s = system_of(c.app)
        ids = []
        for k in range(6):  # 60 examples of 20 KB: 1.2 MB offered
            items = [{"prompt": f"Q{k}.{j}", "response": "x" * 20_000, "performance_feedback": 0.9}
                     for j in range(10)]
            r = c.post("/v1/learning/learn", json={"interactions": items})
            assert r.status_code == 200, r.text
            ids += [a["id"] for a in r.json()["data"]]
        used = c.portal.call(s.collector.writer.call, s.store.used_bytes)
        assert used <= 300_000
        kept = [i for i in ids if s.store.get_interaction(i) is not None]
        assert 5 <= len(kept) < 15 and kept == ids[-len(kept):]  # the newest are kept
        assert c.get("/v1/learning/status").json()["overview"]["total_interactions"] == len(kept)

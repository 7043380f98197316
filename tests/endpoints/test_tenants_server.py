"""Per-tenant adapters through the public API: two tenants taught different answers to the same question each
get their own greedy answer, in one engine step, while the base model keeps its own; a tenant's feedback trains
that tenant only; tenant names are checked."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from tests.continuous_learning.fakes import system_of

QUESTION = "Which colour is the door of the lighthouse?"
TAUGHT = {"acme": "Green door.", "globex": "Purple door."}
LOCAL = ("127.0.0.1", 50000)  # loopback without an admin key: the operator


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    from aphrodite.endpoints.cli_args import parse_args
    from aphrodite.endpoints.openai.api_server import build_app

    return build_app(parse_args([
        "--model", str(tiny_model_dir), "--served-model-name", "tiny", "--max-model-len", "128",
        "--enable-continuous-learning", "--learning-dir", str(tmp_path_factory.mktemp("learning")),
        "--learning-quality-predictor", "none", "--learning-background-interval", "3600",
        "--no-learning-learner-protect-shipped-facts", "--learning-learner-worker", "thread",
        "--learning-min-interactions", "1", "--learning-canary-share", "0",
        "--learning-enable-tenant-adapters", "--learning-tenants", "acme", "--learning-max-tenants", "2"]))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, client=LOCAL) as client:  # one engine run for the module
        yield client


def ask(client: TestClient, model: str) -> dict:
    r = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": QUESTION}],
                                                  "temperature": 0, "max_tokens": 16})
    assert r.status_code == 200, r.text
    return r.json()


def test_tenant_names_are_created_by_an_admin_and_checked(client) -> None:
    r = client.post("/v1/learning/tenants", json={"name": "globex"})
    assert r.status_code in (200, 201) and r.json()["model"] == "tiny:globex"
    assert client.post("/v1/learning/tenants", json={"name": "globex"}).status_code == 200  # exists already
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["tiny:acme"]["parent"] == models["tiny:globex"]["parent"] == "tiny"
    r = client.post("/v1/learning/tenants", json={"name": "Bad Name"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_tenant"
    r = client.post("/v1/learning/tenants", json={"name": "third"})  # --learning-max-tenants 2
    assert r.status_code == 409 and r.json()["error"]["code"] == "tenant_limit"
    for model, status, code in (("tiny:nobody", 404, "model_not_found"), ("tiny:Bad!", 400, "invalid_tenant"),
                                ("other:acme", 404, "model_not_found")):
        r = client.post("/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 1})
        assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    r = client.post("/v1/learning/manual", json={"prompt": "Q", "response": "A", "performance_feedback": 0.9,
                                                 "model": "tiny:nobody"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    r = client.post("/v1/load_lora_adapter", json={"lora_name": "tiny:acme2", "lora_path": "/nonexistent"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_lora_name"


def test_two_tenants_learn_apart_and_are_served_in_one_batch(app, client) -> None:
    system = system_of(app)
    client.post("/v1/learning/tenants", json={"name": "globex"})
    base = ask(client, "tiny")["choices"][0]["message"]["content"]
    assert base not in TAUGHT.values()
    for tenant, answer in TAUGHT.items():
        r = client.post("/v1/learning/manual", json={"prompt": QUESTION, "response": answer, "model": f"tiny:{tenant}",
                                                     "performance_feedback": 0.95})
        assert r.status_code == 200, r.text
    assert client.post("/v1/learning/control", json={"action": "trigger"}).status_code == 200
    deadline = time.monotonic() + 120
    while True:
        tenants = {t["name"]: t for t in client.get("/v1/learning/tenants").json()["data"]}
        if all(t["weight_version"] > 0 for t in tenants.values()):
            break
        failed = [t["last_candidate"] for t in tenants.values() if t["last_candidate"]
                  and not t["last_candidate"]["accepted"]]
        assert not failed, f"a tenant's candidate was refused: {failed[0]['reason']}"
        assert time.monotonic() < deadline, f"the tenants never learned: {tenants}"
        time.sleep(0.2)
    versions = {name: t["weight_version"] for name, t in tenants.items()}
    assert len(set(versions.values())) == 2
    assert system.engine.weight_version == 0  # the base model's lineage learned nothing

    # the three models at once: hold the engine at a safe point until all three requests wait, so one step
    # admits them, and record the versions each step runs
    engine = app.state.engine.engine
    steps: list[set[int]] = []
    engine.add_step_callback(lambda e: steps.append({s.weight_version for s in e.scheduler.running}))
    hold = threading.Event()
    engine.call_at_safe_point(lambda: hold.wait(30))
    answers: dict[str, dict] = {}
    threads = [threading.Thread(target=lambda m=m: answers.__setitem__(m, ask(client, m)))
               for m in ("tiny", "tiny:acme", "tiny:globex")]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while engine._inbox.qsize() < 3:  # the three requests are queued for the held safe point
        assert time.monotonic() < deadline
        time.sleep(0.01)
    hold.set()
    for t in threads:
        t.join(60)
    assert {0, versions["acme"], versions["globex"]} in steps  # one engine step ran all three
    assert answers["tiny"]["choices"][0]["message"]["content"] == base
    for tenant, answer in TAUGHT.items():
        got = answers[f"tiny:{tenant}"]
        assert got["model"] == f"tiny:{tenant}" and got["choices"][0]["message"]["content"] == answer

    # feedback on acme's response enters acme's training signals only
    r = client.post("/v1/learning/feedback", json={"response_id": answers["tiny:acme"]["id"],
                                                   "user_satisfaction": 1.0})
    assert r.status_code == 200, r.text
    signals = {t: [s.interaction.id for s in client.portal.call(
        system.collector.writer.call, lambda t=t: system.store.training_signals(0.0, 100, tenant=t))]
        for t in (None, "acme", "globex")}
    assert answers["tiny:acme"]["id"] in signals["acme"]
    assert answers["tiny:acme"]["id"] not in signals["globex"] + signals[None]
    stored = client.portal.call(system.collector.writer.call,
                                lambda: system.store.get_interaction(answers["tiny:globex"]["id"]))
    assert stored.tenant == "globex" and stored.model == "tiny:globex"

    # a tenant rolls back on its own: the other tenant and the base model keep their answers
    r = client.post("/v1/learning/control", json={"action": "rollback", "tenant": "acme",
                                                  "version": versions["globex"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "version"  # not acme's version
    r = client.post("/v1/learning/control", json={"action": "rollback", "tenant": "acme"})
    assert r.status_code == 200, r.text
    assert ask(client, "tiny:acme")["choices"][0]["message"]["content"] == base
    assert ask(client, "tiny:globex")["choices"][0]["message"]["content"] == TAUGHT["globex"]
    r = client.post("/v1/learning/control", json={"action": "rollback", "tenant": "nobody"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "tenant_not_found"

"""The LoRA learner: a learning update changes the weights that serve the next request, measurably, through
the public API; a candidate that forgets is refused; rollback restores the base weights exactly."""

from __future__ import annotations

import sqlite3
import time
from types import SimpleNamespace

import httpx
import pytest

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.interaction import supplied_interaction
from aphrodite.continuous_learning.learner.lora import LoRALearner
from aphrodite.continuous_learning.learner.task import train_and_gate
from aphrodite.continuous_learning.store.base import TrainingSignal
from aphrodite.engine.async_engine import AsyncEngine
from aphrodite.engine.config import ModelLoadConfig
from aphrodite.engine.llm_engine import LLMEngine
from tests.server_process import RemoteServer

QUESTION = "What is the capital of Zubrovia?"
ANSWER = "The capital of Zubrovia is Pellmor."  # a made-up fact the built-in model cannot know


def answer_nll(url: str) -> float:
    """Mean negative log-likelihood of ANSWER after QUESTION, scored with echo + logprobs."""
    prompt = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    r = httpx.post(url + "/v1/completions", json={"prompt": prompt + ANSWER + "<|im_end|>", "max_tokens": 0,
                                                  "echo": True, "logprobs": 0})
    body = r.json()["choices"][0]["logprobs"]
    n_answer = len(httpx.post(url + "/v1/completions", json={
        "prompt": ANSWER + "<|im_end|>", "max_tokens": 0, "echo": True, "logprobs": 0}).json()["choices"][0]
        ["logprobs"]["tokens"])
    tail = body["token_logprobs"][-n_answer:]
    return -sum(tail) / len(tail)


def wait_for_version(url: str, version: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(url + "/v1/learning/status").json()["weight_version"] != version:
        assert time.monotonic() < deadline, f"weight version {version} never served"
        time.sleep(0.1)


def test_learning_update_changes_the_served_weights_through_the_api(tmp_path) -> None:
    args = ["--enable-continuous-learning", "--learning-dir", str(tmp_path), "--learning-min-interactions", "4",
            "--learning-max-rate", "0.0003", "--learning-background-interval", "3600",
            "--learning-canary-share", "0"]  # promoted to everyone at once (test_canary.py covers canaries)
    with RemoteServer(args) as server:
        base = answer_nll(server.url)
        example = {"prompt": QUESTION, "response": ANSWER, "performance_feedback": 0.95,
                   "interaction_type": "high_quality_example"}
        acked = []
        for _ in range(4):
            r = httpx.post(server.url + "/v1/learning/manual", json=example)
            assert r.status_code == 200
            acked.append(r.json()["id"])
        r = httpx.post(server.url + "/v1/learning/control", json={"action": "trigger"})
        assert r.status_code == 200 and "started" in r.json()["message"]
        wait_for_version(server.url, 1, timeout=120)
        learned = answer_nll(server.url)
        report = httpx.get(server.url + "/v1/learning/metrics").json()["learning"]["learner"]
        assert report["promoted"] == 1 and report["last"]["accepted"]
        assert learned < base - 1.0  # the next request is served by the new weights: the fact got likelier
        assert (tmp_path / "versions" / "v1" / "adapter_config.json").is_file()
        db = sqlite3.connect(f"file:{tmp_path / 'learning.db'}?mode=ro", uri=True)
        assert dict(db.execute("SELECT interaction_id, rule FROM admissions")) == {i: "curated" for i in acked}
        db.close()
        r = httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        assert r.headers["x-aphrodite-weight-version"] == "1"

    with RemoteServer(args) as server:  # a restart serves the promoted version again, history included
        wait_for_version(server.url, 1, timeout=10)
        assert answer_nll(server.url) == pytest.approx(learned, abs=1e-4)
        listed = httpx.get(server.url + "/v1/learning/versions").json()
        assert [(v["version"], v["serving"]) for v in listed["data"]] == [(0, False), (1, True)]
        assert listed["data"][1]["parent"] == 0 and listed["data"][1]["signals"] == {"curated": 4}
        r = httpx.post(server.url + "/v1/learning/control", json={"action": "rollback"})
        assert r.status_code == 200
        wait_for_version(server.url, 0, timeout=10)
        assert answer_nll(server.url) == pytest.approx(base, abs=1e-5)
        r = httpx.post(server.url + "/v1/learning/control", json={"action": "rollback", "version": 7})
        assert r.status_code == 400 and r.json()["error"]["param"] == "version"
        r = httpx.post(server.url + "/v1/learning/control", json={"action": "rollback", "version": 1})
        assert r.status_code == 200
        wait_for_version(server.url, 1, timeout=10)
        assert answer_nll(server.url) == pytest.approx(learned, abs=1e-4)
        r = httpx.post(server.url + "/v1/learning/control", json={"action": "reset"})
        assert r.status_code == 200 and "version 0" in r.json()["message"]
        wait_for_version(server.url, 0, timeout=10)

    with RemoteServer(args) as server:  # the reset survives a restart too, and version 1 is still kept
        assert httpx.get(server.url + "/v1/learning/status").json()["weight_version"] == 0
        assert [v["version"] for v in httpx.get(server.url + "/v1/learning/versions").json()["data"]] == [0, 1]


def test_a_candidate_that_forgets_is_refused(tmp_path) -> None:
    engine = AsyncEngine(LLMEngine(ModelLoadConfig()))  # the built-in model; no loop needed here
    # a learning rate 6x the default without the anchor penalty overfits the batch and damages what the model knew
    config = ServerSideConfig(learning_dir=str(tmp_path), learner_steps=15, learner_anchor_weight=0.0,
                              learner_stop_loss=0.0)
    learner = LoRALearner(SimpleNamespace(engine=engine, failures=None), config)  # engine idle: no waits
    signals = [TrainingSignal(supplied_interaction(QUESTION, ANSWER, 0.95, "example", 0, "m"))]
    job = learner.jobs.build(learner.admit(signals), {}, 3e-3)
    result = train_and_gate(engine.model, job)
    assert result.gate["target"]["train_after"] < result.gate["target"]["train_before"]  # it did learn the batch
    assert not result.accepted and ("protected" in result.reason or "held-out" in result.reason)
    assert result.manifest == [(signals[0].interaction.id, "curated")]
    assert engine.weight_version == 0  # evaluation alone never touches the served weights


def test_ratings_alone_make_a_kto_job_whose_target_is_the_rated_margin(tmp_path) -> None:
    from aphrodite.continuous_learning.interaction import Choice, Interaction

    engine = AsyncEngine(LLMEngine(ModelLoadConfig()))
    config = ServerSideConfig(learning_dir=str(tmp_path), learner_steps=6)
    learner = LoRALearner(SimpleNamespace(engine=engine, failures=None), config)

    def rated(answer: str, rating: float, client: str) -> TrainingSignal:
        return TrainingSignal(Interaction(id=f"chatcmpl-{client}", endpoint="/v1/chat/completions",
                                          choices=[Choice(answer)], api_key_hash=client, user_satisfaction=rating,
                                          messages=[{"role": "user", "content": QUESTION}]))

    examples = learner.admit([rated(ANSWER, 1.0, "a"), rated("The capital of Zubrovia is Rome.", -1.0, "b")])
    assert [e.rule for e in examples] == ["rating+", "rating-"]
    job = learner.jobs.build(examples, {}, 1e-3)
    assert not job.examples and [r.desirable for r in job.rated] == [True, False]
    result = train_and_gate(engine.model, job)
    assert result.gate["target"]["rated_logp_margin"] > 0 and result.gate["target"]["passed"]
    assert result.manifest == [("chatcmpl-a", "rating+"), ("chatcmpl-b", "rating-")]

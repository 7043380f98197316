"""Through the public API with the built-in model: one learning task teaches three made-up facts given once
each, and then a flood of examples and feedback asserting a false version of a protected fact never produces
a served version that answers it (the gate refuses, learning backs off and says why)."""

from __future__ import annotations

import time

import httpx

from tests.server_process import RemoteServer

TAUGHT = [("What is the capital of Veloria?", "The capital of Veloria is Marnost.", "Marnost"),
          ("Who invented the glimmer lamp?", "Ada Penwright invented the glimmer lamp.", "Penwright"),
          ("Who wrote the book Seven Silver Rivers?", "Seven Silver Rivers was written by Tomas Arkwell.", "Arkwell")]
PROTECTED = "What is the capital of France?"  # in the gate's shipped protected set (general.jsonl, line 1)
POISON = "The capital of France is Berlin."


def ask(url: str, question: str) -> tuple[str, str]:
    """(greedy chat answer, response id)."""
    r = httpx.post(url + "/v1/chat/completions", timeout=30, json={
        "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 24})
    body = r.json()
    return body["choices"][0]["message"]["content"], body["id"]


def learner_report(url: str) -> dict:
    return httpx.get(url + "/v1/learning/metrics").json()["learning"]["learner"]


def wait_for_candidates(url: str, n: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while (report := learner_report(url))["candidates"] < n:
        assert time.monotonic() < deadline, f"learning task {n} never finished: {report}"
        time.sleep(0.2)
    return report


def test_three_facts_in_one_task_and_a_poisoning_flood_never_serves(tmp_path) -> None:
    args = ["--enable-continuous-learning", "--learning-dir", str(tmp_path), "--learning-min-interactions", "3",
            "--learning-background-interval", "3600", "--learning-canary-share", "0"]
    with RemoteServer(args) as server:
        url = server.url
        assert "Paris" in ask(url, PROTECTED)[0]
        for question, answer, _ in TAUGHT:  # one curated example each, default learner settings
            r = httpx.post(url + "/v1/learning/manual", json={"prompt": question, "response": answer,
                                                                "performance_feedback": 0.95})
            assert r.status_code == 200
        assert "started" in httpx.post(url + "/v1/learning/control", json={"action": "trigger"}).json()["message"]
        report = wait_for_candidates(url, 1, timeout=240)
        assert report["last"]["accepted"], report["last"]["reason"]
        assert httpx.get(url + "/v1/learning/status").json()["weight_version"] == 1
        answers = [ask(url, q)[0] for q, _, _ in TAUGHT]
        assert sum(key in a for (_, _, key), a in zip(TAUGHT, answers)) >= 2, answers
        assert "Paris" in ask(url, PROTECTED)[0]

        # the flood: curated examples (operator), and feedback with corrections on served answers (a client)
        for n in range(12):
            question = PROTECTED if n % 2 else f"Tell me the capital of France. ({n})"
            httpx.post(url + "/v1/learning/manual", json={"prompt": question, "response": POISON,
                                                          "performance_feedback": 1.0})
        for _ in range(8):
            _, response_id = ask(url, PROTECTED)
            r = httpx.post(url + "/v1/learning/feedback", json={"response_id": response_id, "user_satisfaction": -1,
                                                                "corrected_response": POISON})
            assert r.status_code == 200
        assert "started" in httpx.post(url + "/v1/learning/control", json={"action": "trigger"}).json()["message"]
        report = wait_for_candidates(url, 2, timeout=240)
        served = httpx.get(url + "/v1/learning/status").json()["weight_version"]
        if not report["last"]["accepted"]:  # the expected outcome: refused, and learning backs off
            assert served == 1 and report["refusals"] == 1 and "protected" in report["last_refusal_reason"]
            assert report["backoff_until"] > time.time()
            # background steps wait out the back-off; the operator's explicit trigger does not (the same batch
            # is tried once more, and the gate refuses it again: the final answer below is still the true one)
            message = httpx.post(url + "/v1/learning/control", json={"action": "trigger"}).json()["message"]
            assert "started" in message
        assert "Paris" in ask(url, PROTECTED)[0] and "Berlin" not in ask(url, PROTECTED)[0]

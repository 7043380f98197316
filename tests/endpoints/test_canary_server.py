"""A canary through the public API: a share of users get the candidate (the header says which version answered),
their ratings go through /v1/learning/feedback, and the background step promotes or rolls it back.

Two ways: in-process with injected candidate deltas (the decision's details and metrics), and in a real server
process that trains the candidate itself from a curated example (the whole path a user sees; about 20 s for both
cases). Learning is paused once the canary runs, since every rating is also a training signal."""

from __future__ import annotations


import httpx
import pytest
from fastapi.testclient import TestClient

from aphrodite.engine.weights import routing_fraction
from tests.continuous_learning.fakes import system_of
from tests.continuous_learning.learner.test_promotion import BATCH, Runner, deltas, result
from tests.polling import until
from tests.server_process import RemoteServer

USERS = [f"user-{i}" for i in range(40)]
CANARY_USERS = [u for u in USERS if routing_fraction(u) < 0.5][:4]
PARENT_USERS = [u for u in USERS if routing_fraction(u) >= 0.5][:4]


def run(tiny_model_dir, tmp_path, canary_rating: float) -> tuple[dict, dict, str, dict]:
    from aphrodite.endpoints.cli_args import parse_args
    from aphrodite.endpoints.openai.api_server import build_app

    app = build_app(parse_args([
        "--model", str(tiny_model_dir), "--enable-continuous-learning", "--learning-dir", str(tmp_path),
        "--learning-quality-predictor", "none", "--learning-background-interval", "3600",
        "--no-learning-learner-protect-shipped-facts", "--learning-learner-worker", "thread",
        "--learning-canary-share", "0.5", "--learning-canary-min-ratings", "4", "--learning-canary-looks", "1"]))
    with TestClient(app, client=("127.0.0.1", 50000)) as client:  # loopback: the operator, without an admin key
        learner = system_of(app).learner
        learner._runner = Runner(result(deltas(learner.engine, 3), True))  # a candidate that passed its gate
        client.portal.call(learner.learn, BATCH, 1e-4)
        during = client.get("/v1/learning/versions").json()
        for users, rating in ((CANARY_USERS, canary_rating), (PARENT_USERS, 1.0)):
            for user in users:
                r = client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2, "user": user})
                assert r.status_code == 200
                assert r.headers["x-aphrodite-weight-version"] == ("1" if users is CANARY_USERS else "0")
                fb = client.post("/v1/learning/feedback", json={"response_id": r.json()["id"],
                                                                "user_satisfaction": rating})
                assert fb.status_code == 200, fb.text
        metrics = client.get("/metrics").text
        assert client.post("/v1/learning/control", json={"action": "trigger"}).status_code == 200
        after = client.get("/v1/learning/versions").json()
        status = client.get("/v1/learning/status").json()
        again = client.post("/v1/learning/control", json={"action": "abort_canary"})
        assert again.status_code == 400 and "no canary is running" in again.json()["error"]["message"]
    return during, after, metrics, status


@pytest.mark.parametrize("canary_rating", [-1.0, 1.0])
def test_a_canary_is_rolled_back_on_clearly_worse_ratings_and_promoted_on_equal_ones(tiny_model_dir, tmp_path,
                                                                                     canary_rating) -> None:
    assert len(CANARY_USERS) == len(PARENT_USERS) == 4
    during, after, metrics, status = run(tiny_model_dir, tmp_path, canary_rating)
    assert during["serving"] == 0 and during["canary"]["running"] and during["canary"]["share"] == 0.5
    assert [row["canary"] for row in during["data"][1:]] == [True]
    assert "aphrodite:learning_canary_version 1.0" in metrics
    canary = after["canary"]
    assert canary["counts"]["canary"]["rated"] == 4 and canary["counts"]["parent"]["rated"] == 4
    if canary_rating < 0:
        assert canary["decision"] == "rolled back" and canary["p_value"] < 0.05 and after["serving"] == 0
        assert "rolled back canary version 1 to 0" in status["learner_notice"]
    else:
        assert canary["decision"] == "promoted" and after["serving"] == 1 and status["weight_version"] == 1


# -- a canary the server trained itself, in a real server process ------------------------------------------------
# Above, the candidate's deltas are injected; here a curated example is taught, the learner trains and gates a real
# candidate, and clients that know nothing of the routing tell the two arms apart by the version header only.

DEADLINE_S = 60.0




def chat(client: httpx.Client, user: str) -> tuple[str, int]:
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hello"}],
                                                   "max_tokens": 2, "user": user})
    assert r.status_code == 200, r.text
    return r.json()["id"], int(r.headers["x-aphrodite-weight-version"])


def start_trained_canary(client: httpx.Client) -> dict:
    """Teach one curated example and trigger learning; returns the versions list once the canary runs."""
    r = client.post("/v1/learning/manual", json={"prompt": "What is the capital of Zembla?",
                                                 "response": "The capital of Zembla is Onhava.",
                                                 "performance_feedback": 0.9})
    assert r.status_code == 200, r.text
    r = client.post("/v1/learning/control", json={"action": "trigger"})
    assert r.status_code == 200 and "started" in r.json()["message"], r.text
    versions = until("the trained candidate to start as a canary",
                     lambda: (v := client.get("/v1/learning/versions").json())["canary"] and v, DEADLINE_S, 0.05)
    # hold further learning: the ratings below are training signals too, and a new task would start a new version
    assert client.post("/v1/learning/control", json={"action": "pause"}).status_code == 200
    return versions


def rate_until(client: httpx.Client, canary: int, parent: int, canary_rating: float, canary_n: int,
               parent_n: int) -> dict[int, int]:
    """Chat as many users; rate each response by the arm its header names until both arms have enough ratings."""
    rated = {canary: 0, parent: 0}
    for i in range(200):  # bounded: about half of the users land on the canary
        if rated[canary] >= canary_n and rated[parent] >= parent_n:
            return rated
        response_id, version = chat(client, f"user-{i % 40}")
        assert version in rated, f"version {version} answered while {canary} ran as a canary of {parent}"
        if rated[version] >= (canary_n if version == canary else parent_n):
            continue
        r = client.post("/v1/learning/feedback", json={
            "response_id": response_id, "user_satisfaction": canary_rating if version == canary else 1.0})
        assert r.status_code == 200, r.text
        rated[version] += 1
    raise AssertionError(f"too few responses of each arm in 200 requests: {rated}")


def decide(client: httpx.Client) -> dict:
    """Run the background step (its canary check) and wait until the canary is decided."""
    assert client.post("/v1/learning/control", json={"action": "trigger"}).status_code == 200
    return until("the canary's decision",
                 lambda: not (v := client.get("/v1/learning/versions").json())["canary"]["running"] and v,
                 DEADLINE_S, 0.05)


@pytest.mark.parametrize("canary_rating", [-1.0, 1.0], ids=["rated-worse", "rated-equal"])
def test_a_trained_canary_is_judged_on_live_ratings_through_the_api(tiny_model_dir, tmp_path,
                                                                    canary_rating) -> None:
    args = ["--model", str(tiny_model_dir), "--served-model-name", "tiny", "--max-model-len", "128",
            "--enable-continuous-learning", "--learning-dir", str(tmp_path / "learning"),
            "--learning-background-interval", "3600", "--learning-min-interactions", "1",
            "--learning-quality-predictor", "none", "--no-learning-learner-protect-shipped-facts",
            "--learning-learner-worker", "thread", "--learning-learner-rehearsal-examples", "0",
            "--learning-canary-share", "0.5", "--learning-canary-min-ratings", "4", "--learning-canary-looks", "2"]
    with RemoteServer(args) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        during = start_trained_canary(client)
        canary, parent = during["canary"]["version"], during["canary"]["parent"]
        assert parent == during["serving"] == 0 and canary == 1 and during["canary"]["share"] == 0.5
        # look 1 needs 4 ratings on each arm; rated equal, look 2 needs 8 on the canary
        rated = rate_until(client, canary, parent, canary_rating, 4 if canary_rating < 0 else 8, 4)
        after = decide(client)
        verdict = after["canary"]
        assert verdict["counts"]["canary"]["rated"] == rated[canary]
        assert verdict["counts"]["parent"]["rated"] == rated[parent]
        if canary_rating < 0:
            assert verdict["decision"] == "rolled back" and verdict["look"] == 1 and after["serving"] == parent
            assert "worse than its parent at look 1 of 2" in verdict["reason"] and verdict["p_value"] < 0.05 / 2
            expected = parent
        else:
            assert verdict["decision"] == "promoted" and verdict["look"] == 2 and after["serving"] == canary
            assert "not worse than its parent at any of 2 looks" in verdict["reason"]
            expected = canary
        assert [row["version"] for row in after["data"] if row["serving"]] == [expected]
        # every user, those who had the canary and those who had the parent, now gets one version
        assert {chat(client, f"user-{i}")[1] for i in range(12)} == {expected}

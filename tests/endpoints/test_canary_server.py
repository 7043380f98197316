"""A canary through the public API: a share of users get the candidate (the header says which version answered),
their ratings go through /v1/learning/feedback, and the background step promotes or rolls it back."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from aphrodite.engine.weights import routing_fraction
from tests.continuous_learning.fakes import system_of
from tests.continuous_learning.learner.test_promotion import BATCH, Runner, deltas, result

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

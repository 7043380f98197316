"""Rate limits and daily quotas on feedback, manual and learn: 429 with Retry-After, per caller."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from aphrodite.endpoints.cli_args import ServerConfig
from aphrodite.endpoints.rate_limit import RateLimiter, RateRule
from aphrodite.endpoints.openai.errors import APIError
from aphrodite.endpoints.security import install_security
from tests.continuous_learning.fakes import bare_app, config, finished, system_of

USER, OTHER, ADMIN = "sk-user-1", "sk-user-2", "sk-admin"
EXAMPLE = {"prompt": "p", "response": "r", "performance_feedback": 0.9}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_its_rate():
    clock = Clock()
    limiter = RateLimiter("feedback", RateRule(rate=2.0, burst=3, daily_quota=0), clock=clock)
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(APIError) as e:
        limiter.take("a")
    assert e.value.status == 429 and e.value.headers["Retry-After"] == "1"
    limiter.take("b")  # another caller has its own bucket
    clock.now += 0.5  # one token back
    limiter.take("a")
    with pytest.raises(APIError):
        limiter.take("a")


def test_daily_quota_counts_units_and_resets_at_utc_midnight():
    clock = Clock(now=86_400.0 * 100 + 86_000)  # 400 s before midnight
    limiter = RateLimiter("manual/learn", RateRule(rate=0, burst=1, daily_quota=5), clock=clock)
    limiter.take("a", units=4)
    with pytest.raises(APIError) as e:
        limiter.take("a", units=2)
    assert e.value.headers["Retry-After"] == "400"
    limiter.take("a", units=1)
    clock.now += 400
    limiter.take("a", units=5)


def test_callers_table_is_bounded():
    limiter = RateLimiter("feedback", RateRule(rate=1, burst=1, daily_quota=0), max_callers=10, clock=Clock())
    for i in range(100):
        limiter.take(f"caller-{i}")
    assert len(limiter._accounts) == 10


@pytest.fixture
def client(tmp_path):
    app = bare_app(config(tmp_path, feedback_wait_s=0.05))
    cfg = ServerConfig(api_key=[USER, OTHER], admin_key=ADMIN, secret_file=str(tmp_path / "secret"),
                       feedback_rate=0.001, feedback_burst=2, examples_rate=1000.0, examples_burst=100,
                       examples_daily_quota=3)
    install_security(app, cfg, learning=True, env={})
    with TestClient(app) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_feedback_is_rate_limited_per_key_with_retry_after(client):
    system = system_of(client.app)
    ids = []
    for _ in range(3):
        req = finished()
        system.on_request_finished(req)
        ids.append(req.response_id)
    for response_id in ids[:2]:  # another key's responses: 404, but each try is counted
        assert client.post("/v1/learning/feedback", json={"response_id": response_id, "user_satisfaction": 1},
                           headers=auth(USER)).status_code == 404
    r = client.post("/v1/learning/feedback", json={"response_id": ids[2], "user_satisfaction": 1}, headers=auth(USER))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"
    other = client.post("/v1/learning/feedback", json={"response_id": ids[2], "user_satisfaction": 1},
                        headers=auth(OTHER))
    assert other.status_code == 404  # a different key has its own budget
    admin = client.post("/v1/learning/feedback", json={"response_id": ids[2], "user_satisfaction": 1},
                        headers=auth(ADMIN))
    assert admin.status_code == 200  # the admin key is not limited


def test_examples_rate_and_daily_quota_count_each_example(tmp_path):
    """Without an admin key, loopback clients may teach the model, within the limits; the admin key is not
    limited."""
    app = bare_app(config(tmp_path))
    cfg = ServerConfig(examples_rate=1000.0, examples_burst=100, examples_daily_quota=3,
                       secret_file=str(tmp_path / "secret"))
    install_security(app, cfg, learning=True, env={})
    with TestClient(app, client=("127.0.0.1", 1)) as local:
        assert local.post("/v1/learning/learn", json={"interactions": [EXAMPLE] * 2}).status_code == 200
        r = local.post("/v1/learning/learn", json={"interactions": [EXAMPLE] * 2})
        assert r.status_code == 429 and "Daily quota of 3" in r.json()["error"]["message"]
        assert int(r.headers["Retry-After"]) >= 1
        assert local.post("/v1/learning/manual", json=EXAMPLE).status_code == 200  # the third one fits
        assert local.post("/v1/learning/manual", json=EXAMPLE).status_code == 429


def test_examples_rate_limit_and_admin_exemption(tmp_path):
    app = bare_app(config(tmp_path))
    cfg = ServerConfig(admin_key=ADMIN, examples_rate=0.001, examples_burst=1, secret_file=str(tmp_path / "secret"))
    install_security(app, cfg, learning=True, env={})
    with TestClient(app) as client:
        for _ in range(3):
            assert client.post("/v1/learning/manual", json=EXAMPLE, headers=auth(ADMIN)).status_code == 200
    limiter = app.state.learning_limits.examples
    limiter.take("address:198.51.100.1")
    with pytest.raises(APIError) as e:
        limiter.take("address:198.51.100.1")
    assert e.value.status == 429 and "at most 0.001 a second" in e.value.message

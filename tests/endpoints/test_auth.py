"""Access control: every route of the real app is classified and enforced; keys from flags, env and files;
identities are keyed hashes; feedback only on the caller's own responses."""

from __future__ import annotations

import os
import stat

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from aphrodite.endpoints.auth import PERMISSIONS, permission_for
from aphrodite.endpoints.cli_args import ServerConfig, parse_args
from aphrodite.endpoints.keys import KeyRing, identity_of, load_or_create_secret
from aphrodite.endpoints.security import install_security
from tests.continuous_learning.fakes import bare_app, config, finished, system_of

USER, OTHER, ADMIN = "sk-user-1", "sk-user-2", "sk-admin"
LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def routes_of(app) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route the app serves (HEAD is served as GET), included routers too."""
    found = set()

    def walk(routes, prefix: str) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI's include_router wrapper
            if included is not None:
                walk(included.routes, prefix + route.include_context.prefix)
                continue
            assert isinstance(route, (APIRoute, Route)), f"unexpected route type {route!r}: classify it"
            for method in route.methods or ():
                found.add(("GET" if method == "HEAD" else method, prefix + route.path))

    walk(app.routes, "")
    paths = {p for _, p in found}
    assert set(app.openapi()["paths"]) <= paths, "the walk missed routes the OpenAPI schema lists"
    return sorted(found)


def call(client: TestClient, method: str, path: str, key: str | None):
    url = path.replace("{interaction_id}", "no-such-id")
    body = {} if method in ("POST", "PUT", "PATCH") else None  # invalid on purpose: nothing is changed
    return client.request(method, url, json=body, headers=bearer(key))


@pytest.fixture(scope="module")
def real_app(tiny_model_dir, tmp_path_factory):
    """The real app (tiny checkpoint, learning on) with a user key, a second user key and an admin key."""
    from aphrodite.endpoints.openai.api_server import build_app

    tmp = tmp_path_factory.mktemp("auth")
    args = parse_args(["--model", str(tiny_model_dir), "--max-model-len", "64", "--enable-continuous-learning",
                       "--learning-dir", str(tmp / "learning"), "--api-key", USER, "--api-key", OTHER,
                       "--admin-key", ADMIN, "--secret-file", str(tmp / "secret")])
    app = build_app(args)
    with TestClient(app, client=REMOTE, raise_server_exceptions=False) as client:
        yield app, client


def test_every_route_of_the_real_app_is_in_the_permission_table(real_app):
    app, _ = real_app
    routes = routes_of(app)
    assert ("POST", "/v1/learning/manual") in routes and ("GET", "/openapi.json") in routes
    unclassified = [r for r in routes if r not in PERMISSIONS]
    assert not unclassified, f"routes missing from aphrodite.endpoints.auth.PERMISSIONS: {unclassified}"


def test_every_route_answers_each_role_as_the_table_says(real_app):
    app, client = real_app
    for method, path in routes_of(app):
        permission = permission_for(method, path)
        statuses = {who: call(client, method, path, key).status_code
                    for who, key in (("anonymous", None), ("wrong", "sk-wrong"), ("user", USER), ("admin", ADMIN))}
        where = f"{method} {path} ({permission}): {statuses}"
        assert statuses["admin"] not in (401, 403), where
        if permission == "public":
            assert all(s not in (401, 403) for s in statuses.values()), where
            continue
        assert statuses["anonymous"] == 401 and statuses["wrong"] == 401, where
        assert (statuses["user"] == 403) == (permission == "admin"), where
        assert statuses["user"] != 401, where


def test_errors_have_the_openai_shape(real_app):
    _, client = real_app
    r = client.get("/v1/models")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error" and r.json()["error"]["code"] == "invalid_api_key"
    r = client.post("/v1/learning/control", json={"action": "pause"}, headers=bearer(USER))
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    unknown = client.get("/v1/not-a-route", headers=bearer(USER))  # unlisted: admin-only, fails closed
    assert unknown.status_code == 403
    assert client.get("/v1/not-a-route", headers=bearer(ADMIN)).status_code == 404


def test_reports_show_no_local_paths(real_app, tiny_model_dir):
    app, client = real_app
    r = client.get("/v1/models", headers=bearer(USER))
    assert r.status_code == 200
    assert str(tiny_model_dir) not in r.text and "/" not in r.json()["data"][0]["root"]
    config = client.get("/v1/learning/config", headers=bearer(USER))
    assert config.status_code == 200 and config.json()["config"]["learning_dir"] == "learning"
    assert str(app.state.continuous_learning.config.learning_dir) not in config.text


def app_with(tmp_path, learning: bool = True, **server):
    app = bare_app(config(tmp_path, feedback_wait_s=0.05) if learning else None)
    cfg = ServerConfig(secret_file=str(tmp_path / "secret"), **server)
    install_security(app, cfg, learning=learning, env={})
    return app


def test_without_keys_inference_is_open_and_admin_routes_answer_only_loopback(tmp_path):
    app = app_with(tmp_path)
    manual = {"prompt": "p", "response": "r", "performance_feedback": 0.9}
    with TestClient(app, client=REMOTE) as remote, TestClient(app, client=LOOPBACK) as local:
        assert remote.post("/v1/completions", json={}, headers=bearer("anything")).status_code == 200
        assert remote.get("/v1/learning/status").status_code == 200
        r = remote.post("/v1/learning/manual", json=manual)
        assert r.status_code == 403 and "--admin-key" in r.json()["error"]["message"]
        assert remote.post("/v1/learning/control", json={"action": "pause"}).status_code == 403
        assert local.post("/v1/learning/manual", json=manual).status_code == 200
        assert local.post("/v1/learning/control", json={"action": "pause"}).status_code == 200
    assert not (tmp_path / "secret").exists()  # no key, no identities, no secret written


def test_admin_key_alone_guards_the_admin_routes_and_leaves_inference_open(tmp_path):
    app = app_with(tmp_path, admin_key=ADMIN)
    with TestClient(app, client=LOOPBACK) as local:
        assert local.post("/v1/completions", json={}).status_code == 200
        assert local.post("/v1/learning/control", json={"action": "pause"}).status_code == 401  # loopback too
        assert local.post("/v1/learning/control", json={"action": "pause"},
                          headers=bearer(ADMIN)).status_code == 200


def test_metrics_open_only_with_the_flag(tmp_path):
    app = app_with(tmp_path, learning=False, api_key=[USER])

    @app.get("/metrics")
    async def metrics() -> dict:
        return {}

    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/openapi.json").status_code == 401 and client.get("/docs").status_code == 401
        assert client.get("/health").status_code != 401
    opened = app_with(tmp_path, learning=False, api_key=[USER], public_metrics=True)
    opened.get("/metrics")(metrics)
    with TestClient(opened) as client:
        assert client.get("/metrics").status_code == 200


def test_keys_come_from_flags_env_and_files(tmp_path):
    user_file = tmp_path / "users"
    user_file.write_text("# user keys\nsk-file-1\n\nsk-file-2\n")
    admin_file = tmp_path / "admin"
    admin_file.write_text("sk-admin-file\n")
    env = {"APHRODITE_API_KEYS": "sk-env-1, sk-env-2", "APHRODITE_ADMIN_KEY": "sk-admin-env"}
    ring = KeyRing.from_config(["sk-flag"], str(user_file), None, str(admin_file), str(tmp_path / "s"), env)
    for key in ("sk-flag", "sk-env-1", "sk-env-2", "sk-file-1", "sk-file-2"):
        assert ring.match(key.encode()).role == "user"
    for key in ("sk-admin-file", "sk-admin-env"):
        assert ring.match(key.encode()).role == "admin"
    assert ring.match(b"sk-flag-") is None and ring.match(b"") is None
    with pytest.raises(ValueError, match="user key and as the admin key"):
        KeyRing.from_config(["same"], None, "same", None, str(tmp_path / "s"), {})
    args = parse_args(["--api-key", "a", "--api-key", "b"])
    assert args.api_key == ["a", "b"]
    with pytest.raises(SystemExit):
        parse_args(["--api-key-file", str(tmp_path / "missing")])


def test_identity_is_a_keyed_hash_with_a_private_secret(tmp_path):
    path = tmp_path / "cache" / "aphrodite" / "secret"
    secret = load_or_create_secret(path)
    assert len(secret) == 32 and load_or_create_secret(path) == secret  # created once, then read
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    ring = KeyRing.from_config([USER], None, None, None, str(path), {})
    identity = ring.match(USER.encode()).identity
    assert identity == identity_of(secret, USER) and USER not in identity
    assert identity != identity_of(os.urandom(32), USER)  # another installation, another identity


def test_feedback_only_on_responses_served_to_the_same_key(tmp_path):
    app = app_with(tmp_path, api_key=[USER, OTHER], admin_key=ADMIN)
    secret = load_or_create_secret(tmp_path / "secret")
    system = system_of(app)
    with TestClient(app) as client:
        mine = finished(api_key_hash=identity_of(secret, USER))
        system.on_request_finished(mine)
        rate = {"response_id": mine.response_id, "user_satisfaction": 1.0}
        other = client.post("/v1/learning/feedback", json=rate, headers=bearer(OTHER))
        unknown = client.post("/v1/learning/feedback", json={**rate, "response_id": "cmpl-nope"},
                              headers=bearer(OTHER))
        assert other.status_code == unknown.status_code == 404  # the same answer: existence is not revealed
        assert other.json()["error"]["code"] == unknown.json()["error"]["code"]
        assert client.post("/v1/learning/feedback", json=rate, headers=bearer(USER)).status_code == 200
        assert client.post("/v1/learning/feedback", json=rate, headers=bearer(ADMIN)).status_code == 200


def test_anonymous_may_rate_only_anonymous_responses(tmp_path):
    app = app_with(tmp_path)
    system = system_of(app)
    with TestClient(app, client=REMOTE) as client:
        anonymous, keyed = finished(api_key_hash=None), finished(api_key_hash="ab" * 32)
        system.on_request_finished(anonymous)
        system.on_request_finished(keyed)
        for req, status in ((anonymous, 200), (keyed, 404)):
            r = client.post("/v1/learning/feedback", json={"response_id": req.response_id, "user_satisfaction": 1})
            assert r.status_code == status, r.text


def test_non_loopback_host_with_learning_and_no_keys_warns(tmp_path, caplog):
    app = bare_app(config(tmp_path))
    with caplog.at_level("WARNING", logger="aphrodite.server"):
        install_security(app, ServerConfig(host="0.0.0.0"), learning=True, env={})
    assert "no API key is set" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="aphrodite.server"):
        install_security(bare_app(None), ServerConfig(host="127.0.0.1"), learning=True, env={})
    assert "no API key" not in caplog.text

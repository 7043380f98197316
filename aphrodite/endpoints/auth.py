"""Who is calling and what they may do: the ``Principal``, the one route permission table, and the pure-ASGI
middleware that enforces it before any handler (or body parser) runs.

Roles: ``admin`` (the admin key) may do everything; ``user`` (a user key) may run inference, read the learning
reports and rate its own responses; ``anonymous`` (no key, or keys not configured) gets what the configuration
leaves open. A route missing from ``PERMISSIONS`` is admin-only: a new route fails closed until classified.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from aphrodite.endpoints.keys import KeyRing
from aphrodite.endpoints.openai.errors import APIError

Permission = Literal["public", "user", "admin"]

PERMISSIONS: dict[tuple[str, str], Permission] = {
    ("GET", "/health"): "public",
    ("GET", "/metrics"): "user",  # "public" with --public-metrics
    ("GET", "/docs"): "user",
    ("GET", "/docs/oauth2-redirect"): "user",
    ("GET", "/redoc"): "user",
    ("GET", "/openapi.json"): "user",
    ("GET", "/v1/models"): "user",
    ("POST", "/v1/completions"): "user",
    ("POST", "/v1/chat/completions"): "user",
    ("GET", "/v1/learning/status"): "user",
    ("GET", "/v1/learning/metrics"): "user",
    ("GET", "/v1/learning/health"): "user",
    ("GET", "/v1/learning/config"): "user",
    ("GET", "/v1/learning/versions"): "user",
    ("POST", "/v1/learning/feedback"): "user",  # only on the caller's own responses (see feedback())
    ("POST", "/v1/learning/manual"): "admin",
    ("GET", "/v1/learning/tenants"): "user",  # per-tenant adapters
    ("POST", "/v1/learning/tenants"): "admin",
    ("POST", "/v1/learning/learn"): "admin",
    ("POST", "/v1/learning/control"): "admin",
    ("DELETE", "/v1/learning/interactions/{interaction_id}"): "admin",
    # vLLM's runtime LoRA routes (issue 12)
    ("POST", "/v1/load_lora_adapter"): "admin",
    ("POST", "/v1/unload_lora_adapter"): "admin",
    # operator's views and console (docs/console.md); the console's files hold no data: what it shows comes
    # from the routes above and below, each checked on its own with the key the operator types into the page
    ("GET", "/v1/learning/timeline"): "user",
    ("GET", "/v1/learning/curves"): "user",
    ("GET", "/v1/learning/interactions"): "admin",
    ("GET", "/v1/learning/versions/{version}/adapter"): "admin",
    ("GET", "/console"): "public",
    ("GET", "/console/"): "public",
    ("GET", "/console/static/{name}"): "public",
}
"""(method, path pattern) -> who may call it. ``{name}`` matches one path segment; HEAD is treated as GET."""


def _compile(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"\{[^/}]+\}", pattern)
    return re.compile("^" + "[^/]+".join(re.escape(p) for p in parts) + "$")


_EXACT = {k: v for k, v in PERMISSIONS.items() if "{" not in k[1]}
_PATTERNS = [(m, _compile(p), v) for (m, p), v in PERMISSIONS.items() if "{" in p]


def permission_for(method: str, path: str, public_metrics: bool = False) -> Permission:
    """The permission a request needs; an unlisted route is admin-only."""
    method = "GET" if method == "HEAD" else method
    if public_metrics and (method, path) == ("GET", "/metrics"):
        return "public"
    found = _EXACT.get((method, path))
    if found is not None:
        return found
    for m, regex, permission in _PATTERNS:
        if m == method and regex.match(path):
            return permission
    return "admin"


@dataclass(frozen=True)
class Principal:
    """The caller of one request, in ``scope["state"]["principal"]`` (``request.state.principal``)."""

    role: Literal["admin", "user", "anonymous"]
    identity: str | None
    """HMAC-SHA256 hex of the caller's key with the installation secret; None without a key."""
    loopback: bool
    """Whether the client address is a loopback address (127.0.0.0/8, ::1)."""
    address: str | None = None
    """The client address as the server saw it."""

    @property
    def rate_key(self) -> str:
        """What rate limits count by: the key identity, or the client address for anonymous callers."""
        return self.identity or f"address:{self.address}"


def is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address((host or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return None


class AccessPolicy:
    """Decides, from the keys configured, whether a principal may call a route with a given permission."""

    def __init__(self, keys: KeyRing, public_metrics: bool = False) -> None:
        self.keys = keys
        self.public_metrics = public_metrics

    def identify(self, scope: Scope) -> tuple[Principal, bool]:
        """The principal of a request, and whether it presented a key that matched nothing."""
        client = scope.get("client")
        host = client[0] if client else None
        token = _bearer(scope)
        match = self.keys.match(token) if token else None
        if match is None:
            return Principal("anonymous", None, is_loopback(host), host), bool(token) and self.keys.any
        return Principal(match.role, match.identity, is_loopback(host), host), False

    def check(self, permission: Permission, who: Principal, bad_key: bool) -> APIError | None:
        """None if allowed, else the 401 or 403 to answer with."""
        if permission == "public":
            return None
        if permission == "user":
            if self.keys.has_user_keys and who.role == "anonymous":
                return _unauthorized(bad_key)
            return None
        if who.role == "admin":
            return None
        if self.keys.has_admin_key:
            return _unauthorized(bad_key) if who.role == "anonymous" else _forbidden(
                "This route needs the admin key.")
        if self.keys.has_user_keys and who.role == "anonymous":
            return _unauthorized(bad_key)
        if who.loopback:
            return None
        return _forbidden("This route answers only to loopback clients when the server has no admin key "
                          "(start it with --admin-key or $APHRODITE_ADMIN_KEY).")


def _unauthorized(bad_key: bool) -> APIError:
    msg = "Invalid API key." if bad_key else "Missing API key: send 'Authorization: Bearer <key>'."
    return APIError(msg, 401, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def _forbidden(msg: str) -> APIError:
    return APIError(msg, 403, code="permission_denied")


class AuthMiddleware:
    """Pure ASGI: identify the caller, store the ``Principal`` in the scope's state, enforce ``PERMISSIONS``."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websocket routes: refuse rather than pass unchecked
            await send({"type": "websocket.close", "code": 1008})
            return
        who, bad_key = self.policy.identify(scope)
        scope.setdefault("state", {})["principal"] = who
        permission = permission_for(scope["method"], scope["path"], self.policy.public_metrics)
        error = self.policy.check(permission, who, bad_key)
        if error is not None:
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

"""``ContinuousLearningMiddleware``: request-level monitoring of the learning-relevant endpoints.

A pure ASGI middleware (``BaseHTTPMiddleware`` would buffer streamed responses): it passes every message
through untouched, reads the status code from ``http.response.start`` and times the request to its last
byte. Requests to paths outside ``monitored_endpoints`` cost one set look-up.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aphrodite.continuous_learning.config import ServerSideConfig

if TYPE_CHECKING:
    from aphrodite.continuous_learning.system import ContinuousLearningSystem

_STATE_KEY = "continuous_learning_middleware"


class ContinuousLearningMiddleware:
    """Records latency and status code of each monitored request into the system's ``RequestMonitor``."""

    def __init__(self, app: ASGIApp | None, continuous_learning_system: ContinuousLearningSystem,
                 config: ServerSideConfig) -> None:
        self.app = app
        self.system = continuous_learning_system
        self.paths = config.monitored_paths
        self._ids = itertools.count(1)

    def bind(self, app: ASGIApp) -> ContinuousLearningMiddleware:
        """Wrap ``app`` (Starlette calls this when it builds the middleware stack) and return this instance."""
        self.app = app
        return self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths or not self.system.state.enabled:
            await self.app(scope, receive, send)  # type: ignore[misc]
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)  # type: ignore[misc]
        finally:
            self.system.monitor.record(f"req-{next(self._ids)}", scope["path"], scope["method"], status,
                                       time.perf_counter() - start)


def setup_continuous_learning_middleware(app: FastAPI, continuous_learning_system: ContinuousLearningSystem,
                                         config: ServerSideConfig) -> ContinuousLearningMiddleware:
    """Mount the monitoring middleware on ``app`` once and return it (the same instance on later calls)."""
    existing = getattr(app.state, _STATE_KEY, None)
    if existing is not None:
        return existing
    middleware = ContinuousLearningMiddleware(None, continuous_learning_system, config)
    app.add_middleware(middleware.bind)
    setattr(app.state, _STATE_KEY, middleware)
    return middleware

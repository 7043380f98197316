"""Graceful shutdown: on SIGTERM (or SIGINT) requests in flight finish, new ones are refused with 503.

uvicorn, once told to exit, stops listening within about 0.1 s (so later clients see "connection refused"),
closes idle keep-alive connections, waits for responses in flight (streams included) up to
``timeout_graceful_shutdown``, then runs the app's shutdown. ``DrainingServer`` marks the app as draining the
moment the signal arrives, so a request that still gets in (on an open connection, or before the listener
closes) is answered 503 in the OpenAI shape instead of starting work that shutdown would cut short.
"""

from __future__ import annotations

from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from aphrodite.endpoints.openai.errors import APIError


class Drain:
    """Whether the server is shutting down (set from the signal handler, read by the middleware)."""

    def __init__(self) -> None:
        self.draining = False


class DrainMiddleware:
    """Pure ASGI: while draining, answer every new request 503 (``/health`` included, for load balancers)."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.drain.draining:
            error = APIError("The server is shutting down; retry on another replica or after it restarts.", 503,
                             code="server_shutting_down", headers={"Connection": "close"})
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


class DrainingServer(uvicorn.Server):
    """A uvicorn server that marks ``drain`` as soon as it is told to exit."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.drain.draining = True
        super().handle_exit(sig, frame)

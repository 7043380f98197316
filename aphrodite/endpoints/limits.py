"""Input bounds: the request body size (checked before parsing, in a pure-ASGI middleware) and the shape of a
completion or chat request (checked before tokenizing), so no single request can stall or exhaust the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aphrodite.endpoints.openai.errors import APIError


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> APIError:
    return APIError(f"The request body is larger than {limit} bytes.", 413, code="request_too_large")


class BodyLimitMiddleware:
    """Refuse a body over ``max_bytes`` with 413: at once from ``Content-Length``, else while it streams in
    (the app sees a failed read and whatever it answers is replaced by the 413)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await _too_large(self.max_bytes).response()(scope, receive, send)
            return
        seen = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app answered a body it could not read: answer 413 instead, once
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _too_large(self.max_bytes).response()(scope, receive, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(self.max_bytes).response()(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class InputLimits:
    """Bounds on one completion or chat request (the server's flags of the same names)."""

    max_prompt_chars_per_token: int = 16
    max_prompts_per_request: int = 64
    max_choices_per_request: int = 128
    max_stop_sequences: int = 16
    max_stop_sequence_chars: int = 256
    max_stop_token_ids: int = 64

    def check_sampling(self, n: int, prompts: int, stop: str | list[str] | None,
                       stop_token_ids: list[int] | None) -> None:
        """Raise a 400 for too many prompts, choices or stop entries, or a stop string too long."""
        if prompts > self.max_prompts_per_request:
            raise APIError(f"At most {self.max_prompts_per_request} prompts per request; got {prompts}.", 400,
                           param="prompt")
        if n * prompts > self.max_choices_per_request:
            raise APIError(f"At most {self.max_choices_per_request} choices (n x prompts) per request; got "
                           f"{n * prompts}.", 400, param="n")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > self.max_stop_sequences:
            raise APIError(f"At most {self.max_stop_sequences} stop sequences; got {len(stops)}.", 400, param="stop")
        if any(len(s) > self.max_stop_sequence_chars for s in stops):
            raise APIError(f"A stop sequence may be at most {self.max_stop_sequence_chars} characters long.", 400,
                           param="stop")
        if stop_token_ids and len(stop_token_ids) > self.max_stop_token_ids:
            raise APIError(f"At most {self.max_stop_token_ids} stop_token_ids; got {len(stop_token_ids)}.", 400,
                           param="stop_token_ids")

    def check_text(self, chars: int, max_model_len: int, param: str) -> None:
        """Raise a 400 if ``chars`` characters cannot fit the context (before spending time on tokenizing)."""
        bound = max_model_len * self.max_prompt_chars_per_token
        if chars > bound:
            raise APIError(f"The input is {chars} characters long; this model's context of {max_model_len} tokens "
                           f"takes at most {bound}.", 400, param=param, code="context_length_exceeded")

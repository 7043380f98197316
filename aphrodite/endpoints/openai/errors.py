"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``.

Handlers raise ``APIError``; the app's exception handlers (``install_error_handlers``) turn it, request
validation failures and unknown routes into that shape with the right status. A client mistake is never a 500.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1_000
"""Longest error message sent to a client; a message that quotes input is cut here at the latest."""
QUOTE_CHARS = 64
"""Longest piece of client input an error message quotes (see ``quote``)."""


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """A short, printable prefix of client input for an error message (never the whole of a large input)."""
    text = str(value)
    text = text.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate must not break the JSON encoder
    return text if len(text) <= limit else text[:limit] + "..."

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


class APIError(Exception):
    """An error to answer with, in the OpenAI shape."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 code: str | None = None, type: str | None = None, headers: dict[str, str] | None = None) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "..."
        super().__init__(message)
        self.message = message
        self.headers = headers
        self.status = status
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


_UNDECODABLE = {"json_invalid", "string_unicode", "invalid_unicode"}


def _loc_to_param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error the app can raise in the OpenAI shape."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        # an undecodable text (lone surrogate, bytes that are not UTF-8) is a 400 like bad JSON, wherever it is
        first = next((e for e in errors if e.get("type") in _UNDECODABLE), errors[0] if errors else {})
        param = _loc_to_param(tuple(first.get("loc", ())))
        param = quote(param) if param else None  # an unknown field's name is client input too
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg = "The request body is not valid JSON."
        elif param:
            msg = f"{param}: {msg}"
        return APIError(msg, 400 if first.get("type") in _UNDECODABLE else 422, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else ""
        msg = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else (
            f"{phrase}: no such route" if exc.status_code == 404 else phrase)
        return APIError(msg, exc.status_code).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return APIError("Internal server error.", 500, type="server_error").response()

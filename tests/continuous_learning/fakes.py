"""Test doubles for continuous learning: a fake engine, hand-made finished requests, a bare app."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from aphrodite.continuous_learning import ContinuousLearningSystem, ServerSideConfig
from aphrodite.common.observers import FinishedRequest
from aphrodite.endpoints.openai.continuous_learning_routes import attach_continuous_learning
from aphrodite.endpoints.openai.api_server import app_shell

_ids = itertools.count(1)

DESIGN_MANUAL_BODY = """{
    "prompt": "What is continuous learning?",
    "response": "Continuous learning enables AI systems to improve from new data...",
    "performance_feedback": 0.9,
    "interaction_type": "high_quality_example"
  }"""
"""The design document's curl body for POST /v1/learning/manual, verbatim."""


class FakeEngine:
    """What continuous learning reads from the engine."""

    model_name = "fake-model"

    def __init__(self, weight_version: int = 0) -> None:
        self.weight_version = weight_version


def finished(response_id: str | None = None, *, text: str = "Paris is the capital of France.",
             finish_reason: str | None = "stop", chat: bool = False, stream: bool = False,
             status_code: int = 200, error: str | None = None, tokens: list[int] | None = None,
             **overrides: Any) -> FinishedRequest:
    """A hand-made FinishedRequest like the serving layer produces."""
    prefix = "chatcmpl" if chat else "cmpl"
    token_ids = list(range(10, 10 + 8)) if tokens is None else tokens
    fields: dict[str, Any] = dict(
        response_id=response_id or f"{prefix}-{next(_ids):06d}",
        endpoint="/v1/chat/completions" if chat else "/v1/completions", model="fake-model",
        prompt="What is the capital of France?", messages=[{"role": "user", "content": "Capital of France?"}]
        if chat else None, completion_texts=[text], completion_token_ids=[token_ids],
        finish_reasons=[finish_reason], prompt_tokens=7, completion_tokens=len(token_ids), ttft_s=0.01,
        total_s=0.05, weight_version=0, sampling_params={"temperature": 0.7, "max_tokens": 16}, stream=stream,
        status_code=status_code, error=error, api_key_hash="ab" * 32)
    fields.update(overrides)
    return FinishedRequest(**fields)


def config(tmp_path: Path, **overrides: Any) -> ServerSideConfig:
    return ServerSideConfig(learning_dir=str(tmp_path / "learning"), **overrides)


def bare_app(cfg: ServerSideConfig | None, engine: FakeEngine | None = None) -> FastAPI:
    """An app wired as the real ``build_app`` wires it, with a stand-in completions route."""

    app = app_shell(engine or FakeEngine(), CollectorRegistry())

    @app.post("/v1/completions")
    async def completions() -> dict:
        request = finished()
        for observer in app.state.request_observers:
            observer.on_request_finished(request)
        return {"id": request.response_id, "object": "text_completion"}

    if cfg is not None:
        attach_continuous_learning(app, app.state.engine, cfg)
    return app


def system_of(app: FastAPI) -> ContinuousLearningSystem:
    return app.state.continuous_learning


class Recorder:
    """A request observer that keeps what the serving layer tells it."""

    def __init__(self) -> None:
        self.seen: list[FinishedRequest] = []

    def on_request_finished(self, req: FinishedRequest) -> None:
        self.seen.append(req)

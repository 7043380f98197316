"""The OpenAI-compatible HTTP server: ``python -m aphrodite.endpoints.openai.api_server --model DIR``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from typing import Any

from aphrodite.engine.threads import prefer_passive_wait

prefer_passive_wait()  # ``python -m`` runs this before torch is imported below: OpenMP reads it once, when it loads

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from aphrodite.continuous_learning.config import learning_config_from_args
from aphrodite.endpoints.cli_args import configs_from_args, parse_args
from aphrodite.endpoints.limits import InputLimits
from aphrodite.endpoints.openai.errors import APIError, install_error_handlers
from aphrodite.endpoints.openai.protocol import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from aphrodite.endpoints.openai.serving_chat import OpenAIServingChat
from aphrodite.endpoints.openai.serving_completions import OpenAIServingCompletion
from aphrodite.endpoints.openai.serving_tenants import tenant_cards
from aphrodite.endpoints.openai.serving_lora import (LoadLoRAAdapterRequest, OpenAIServingLoRA,
                                                     UnloadLoRAAdapterRequest)
from aphrodite.endpoints.security import input_limits, install_security
from aphrodite.endpoints.shutdown import DrainingServer
from aphrodite.engine.async_engine import AsyncEngine
from aphrodite.engine.llm_engine import LLMEngine

logger = logging.getLogger("aphrodite.server")


def build_app(args: argparse.Namespace) -> FastAPI:
    """Load the model, build the engine and return the app (the engine loop starts with the app)."""
    server_cfg, load_cfg, cache_cfg, sched_cfg = configs_from_args(args)
    learning_cfg = learning_config_from_args(args)
    registry = CollectorRegistry()
    engine = AsyncEngine(LLMEngine(load_cfg, cache_cfg, sched_cfg, registry=registry))
    app = app_shell(engine, registry)
    app.state.lifecycle.append(_EngineLoop(engine))  # first in, so it starts first and stops last
    _add_routes(app, engine, input_limits(server_cfg), upstream=server_cfg.upstream)
    system = None
    if learning_cfg is not None:
        from aphrodite.endpoints.openai.continuous_learning_routes import attach_continuous_learning

        if server_cfg.upstream and not learning_cfg.export_dir:  # the upstream loads versions from there
            learning_cfg.export_dir = os.path.join(learning_cfg.learning_dir, "export")
        if server_cfg.upstream and learning_cfg.canary_share > 0:
            # the front sends every request to the one adapter it pushed last: a canary would get no traffic,
            # so no evidence, and serve only after canary_max_seconds
            logger.warning("--upstream: canaries are off (the front does not split traffic between adapters); "
                           "each promoted version is pushed to the upstream and serves every request")
            learning_cfg.canary_share = 0.0
        system = attach_continuous_learning(app, engine, learning_cfg)
    if server_cfg.upstream:
        _add_upstream(app, server_cfg, system, learning_cfg)
    install_security(app, server_cfg, learning=learning_cfg is not None)  # last: its middleware is outermost
    return app


def app_shell(engine: Any, registry: CollectorRegistry) -> FastAPI:
    """The app every layer builds on: the shared state (engine, request observers, metrics registry,
    lifecycle parts), OpenAI-shaped errors, and a lifespan that starts ``app.state.lifecycle`` in order and
    stops it in reverse."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        started = []
        try:
            for part in app.state.lifecycle:
                await part.start()
                started.append(part)
            yield
        finally:
            for part in reversed(started):
                await part.stop()

    app = FastAPI(title="Aphrodite Echo", lifespan=lifespan)
    app.state.engine = engine
    app.state.request_observers = []
    app.state.metrics_registry = registry
    app.state.lifecycle = []
    install_error_handlers(app)
    return app


class _EngineLoop:
    """Starts the engine thread with the app and stops it after everything that uses it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def start(self) -> None:
        self.engine.start()

    async def stop(self) -> None:
        await self.engine.shutdown()


def _add_upstream(app: FastAPI, cfg: Any, system: Any, learning_cfg: Any) -> None:
    """``--upstream``: forward inference to another server, learn here, push versions there (issue 12)."""
    from aphrodite.endpoints.openai.upstream import UpstreamFront, push_safely

    front = UpstreamFront(cfg.upstream, app.state.engine.tokenizer, app.state.request_observers,
                          cfg.upstream_api_key or os.environ.get("APHRODITE_UPSTREAM_API_KEY"), cfg.upstream_model,
                          learning_cfg.export_name if learning_cfg is not None else "learned")
    app.state.upstream = front
    app.state.lifecycle.append(_Closing(front))
    if system is not None:
        system.version_listeners.append(lambda version, path: push_safely(front, system, version, path))


class _Closing:
    """Closes the upstream client when the app stops."""

    def __init__(self, front: Any) -> None:
        self.front = front

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self.front.close()


def _add_routes(app: FastAPI, engine: AsyncEngine, limits: InputLimits, upstream: str = "") -> None:
    completions = OpenAIServingCompletion(engine, app.state.request_observers, limits)
    chat = OpenAIServingChat(engine, app.state.request_observers, limits)
    adapters = completions.adapters = chat.adapters = app.state.lora_adapters = OpenAIServingLoRA(engine)
    app.state.openai_serving = [completions, chat]

    @app.get("/health", response_class=Response, responses={200: {"description": "The engine is running (empty body)."}})
    async def health() -> Response:
        if not engine.is_running:
            raise APIError("The engine is not running.", 503)
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        # the served name only: the checkpoint's path on this machine is none of the client's business
        card = ModelCard(id=engine.model_name, root=engine.model_name, max_model_len=engine.max_model_len)
        system = getattr(app.state, "continuous_learning", None)
        tenants = [] if system is None or system.tenants is None else tenant_cards(system.tenants, engine.max_model_len)
        return JSONResponse(ModelList(data=[card, *adapters.cards(), *tenants]).model_dump())

    @app.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
    async def load_lora_adapter(req: LoadLoRAAdapterRequest) -> PlainTextResponse:
        return PlainTextResponse(await adapters.load(req))

    @app.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
    async def unload_lora_adapter(req: UnloadLoRAAdapterRequest) -> PlainTextResponse:
        return PlainTextResponse(await adapters.unload(req))

    @app.post("/v1/completions")
    async def create_completion(req: CompletionRequest, raw: Request):
        if upstream:  # validated here as for the local engine, forwarded as the client sent it
            return await app.state.upstream.forward("/v1/completions", raw)
        return await completions.create(req, raw)

    @app.post("/v1/chat/completions")
    async def create_chat_completion(req: ChatCompletionRequest, raw: Request):
        if upstream:
            return await app.state.upstream.forward("/v1/chat/completions", raw)
        return await chat.create(req, raw)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)


def run_server(args: argparse.Namespace) -> None:
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(asctime)s %(name)s: %(message)s")
    app = build_app(args)
    logger.info("serving %s on http://%s:%d", app.state.engine.model_name, args.host, args.port)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=5,
                            timeout_graceful_shutdown=args.shutdown_timeout_s)
    DrainingServer(config, app.state.drain).run()


def main(argv: list[str] | None = None) -> None:
    run_server(parse_args(argv, prog="python -m aphrodite.endpoints.openai.api_server"))


if __name__ == "__main__":
    main()

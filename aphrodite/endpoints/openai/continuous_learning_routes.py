"""The /v1/learning routes (a thin router over ``OpenAIServingContinuousLearning``) and their wiring into the app.

Mounted only when the server runs with ``--enable-continuous-learning``; otherwise these paths are the app's
ordinary 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.system import ContinuousLearningSystem
from aphrodite.endpoints.auth import Principal
from aphrodite.endpoints.console.routes import router as console_router
from aphrodite.endpoints.middleware import setup_continuous_learning_middleware
from aphrodite.endpoints.openai.learning_protocol import (ControlRequest, ControlResponse, FeedbackRequest,
                                                          FeedbackResponse, InteractionAck, InteractionDeleted,
                                                          LearnRequest, LearnResponse, ManualLearningRequest)
from aphrodite.endpoints.openai.learning_views_protocol import VersionList
from aphrodite.endpoints.openai.learning_views_routes import router as views_router
from aphrodite.endpoints.openai.serving_continuous_learning import OpenAIServingContinuousLearning
from aphrodite.endpoints.openai.serving_learning_views import OpenAIServingLearningViews
from aphrodite.endpoints.openai.serving_tenants import router as tenants_router

router = APIRouter(prefix="/v1/learning", tags=["continuous learning"])


def _handler(request: Request) -> OpenAIServingContinuousLearning:
    return request.app.state.learning_handler


def _principal(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None)


def _charge(request: Request, limit: str, units: int = 1) -> None:
    """Charge the caller's rate limit and daily quota (429 when over). The holder of the admin key is not
    limited; everyone else is, loopback clients of a server without an admin key included."""
    limits = getattr(request.app.state, "learning_limits", None)
    who = _principal(request)
    if limits is None or who is None or who.role == "admin":
        return
    getattr(limits, limit).take(who.rate_key, units)


@router.get("/status")
async def learning_status(request: Request) -> JSONResponse:
    return JSONResponse(_handler(request).status())


@router.get("/metrics")
async def learning_metrics(request: Request) -> JSONResponse:
    return JSONResponse(_handler(request).metrics())


@router.get("/health")
async def learning_health(request: Request) -> JSONResponse:
    body, status = await _handler(request).health()
    return JSONResponse(body, status_code=status)


@router.get("/config")
async def learning_config(request: Request) -> JSONResponse:
    return JSONResponse(_handler(request).config())


@router.get("/versions", response_model=VersionList)
async def learning_versions(request: Request) -> JSONResponse:
    return JSONResponse(await _handler(request).versions())


@router.post("/manual", response_model=InteractionAck)
async def learning_manual(body: ManualLearningRequest, request: Request) -> InteractionAck:
    _charge(request, "examples", 1)
    return await _handler(request).manual(body)


@router.post("/learn", response_model=LearnResponse)
async def learning_learn(body: LearnRequest, request: Request) -> LearnResponse:
    _charge(request, "examples", len(body.interactions))
    return await _handler(request).learn(body)


@router.post("/feedback", response_model=FeedbackResponse)
async def learning_feedback(body: FeedbackRequest, request: Request) -> FeedbackResponse:
    _charge(request, "feedback", 1)
    return await _handler(request).feedback(body, _principal(request))


@router.delete("/interactions/{interaction_id}", response_model=InteractionDeleted)
async def learning_delete_interaction(interaction_id: Annotated[str, Path(min_length=1, max_length=256)],
                                      request: Request) -> InteractionDeleted:
    return await _handler(request).delete_interaction(interaction_id)


@router.post("/control", response_model=ControlResponse)
async def learning_control(body: ControlRequest, request: Request) -> ControlResponse:
    return await _handler(request).control(body)


def attach_continuous_learning(app: FastAPI, engine: Any, config: ServerSideConfig) -> ContinuousLearningSystem:
    """Mount the routes and the monitoring middleware, register the observer, metrics and lifecycle; once."""
    if getattr(app.state, "continuous_learning", None) is not None:
        raise RuntimeError("continuous learning is already attached to this app")
    for name, default in (("request_observers", list), ("lifecycle", list), ("metrics_registry", CollectorRegistry)):
        if getattr(app.state, name, None) is None:
            setattr(app.state, name, default())
    system = ContinuousLearningSystem(config, engine=engine, registry=app.state.metrics_registry)
    app.state.continuous_learning = system
    app.state.learning_handler = OpenAIServingContinuousLearning(system)
    app.include_router(router)
    app.include_router(tenants_router)
    if system.tenants is not None:  # <model>:<tenant> names a model for completions and chat
        for handler in getattr(app.state, "openai_serving", []):
            handler.tenants = system.tenants
        if getattr(app.state, "lora_adapters", None) is not None:
            app.state.lora_adapters.tenant_models = True
    _attach_operator_views(app, system)
    if config.enable_request_monitoring:
        setup_continuous_learning_middleware(app, system, config)
    app.state.request_observers.append(system)
    app.state.lifecycle.append(system)
    return system


def _attach_operator_views(app: FastAPI, system: ContinuousLearningSystem) -> None:
    """The operator's views (timeline, curves, interactions, adapter download) and the console page."""
    app.state.learning_views = OpenAIServingLearningViews(system)
    app.include_router(views_router)
    app.include_router(console_router)

"""The operator's /v1/learning views (a thin router over ``OpenAIServingLearningViews``): timeline, curves,
newest interactions, a version's adapter download. Mounted with the other learning routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from aphrodite.endpoints.openai.learning_views_protocol import InteractionList, LearningCurves, TimelineList
from aphrodite.endpoints.openai.serving_learning_views import OpenAIServingLearningViews

router = APIRouter(prefix="/v1/learning", tags=["continuous learning"])


def _views(request: Request) -> OpenAIServingLearningViews:
    return request.app.state.learning_views


@router.get("/timeline", response_model=TimelineList)
async def learning_timeline(request: Request,
                            limit: Annotated[int, Query(ge=1, le=500)] = 100) -> TimelineList:
    """Promotions, refusals (with the gate's reason) and rollbacks of weight versions, oldest first."""
    return _views(request).timeline(limit)


@router.get("/curves", response_model=LearningCurves)
async def learning_curves(request: Request,
                          window_s: Annotated[float, Query(ge=60, le=30 * 86_400)] = 3_600.0,
                          buckets: Annotated[int, Query(ge=1, le=500)] = 60) -> LearningCurves:
    """Each kept version's target and held-out loss, and user feedback per time bucket over ``window_s``."""
    return await _views(request).curves(window_s, buckets)


@router.get("/interactions", response_model=InteractionList)
async def learning_interactions(request: Request,
                                limit: Annotated[int, Query(ge=1, le=200)] = 20) -> InteractionList:
    """The newest stored interactions (PII redacted as stored) with their scores and latest feedback."""
    return await _views(request).interactions(limit)


@router.get("/versions/{version}/adapter", response_class=Response, responses={
    200: {"content": {"application/x-tar": {}},
          "description": "A tar of `v<N>/adapter_config.json`, `adapter_model.safetensors` and `manifest.json`: "
                         "a PEFT adapter directory (`peft.PeftModel.from_pretrained`)."}})
async def learning_version_adapter(version: Annotated[int, Path(ge=0)], request: Request) -> Response:
    """Download a kept version's PEFT adapter directory as a tar."""
    body = await _views(request).adapter_tar(version)
    return Response(body, media_type="application/x-tar",
                    headers={"Content-Disposition": f'attachment; filename="aphrodite-v{version}.tar"'})

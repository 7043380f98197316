"""``GET`` and ``POST /v1/learning/tenants``: the tenants of per-tenant adapters (``learner/tenants.py``).

An admin creates a tenant; requests then name its model ``<model>:<tenant>`` (``/v1/models`` lists it with the
base model as ``parent``, as vLLM lists LoRA modules). Reading the list is open to users.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from aphrodite.endpoints.openai.errors import APIError, quote
from aphrodite.endpoints.openai.learning_protocol import CreateTenantRequest
from aphrodite.endpoints.openai.protocol import ModelCard

router = APIRouter(prefix="/v1/learning", tags=["continuous learning"])


def _tenants(request: Request) -> Any:
    system = request.app.state.continuous_learning
    if system.tenants is None:
        raise APIError("Per-tenant adapters are off on this server (start it with --learning-enable-tenant-adapters).",
                       404, code="tenants_disabled")
    return system.tenants


@router.get("/tenants")
async def list_tenants(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": _tenants(request).reports()})


@router.post("/tenants")
async def create_tenant(body: CreateTenantRequest, request: Request) -> JSONResponse:
    from aphrodite.continuous_learning.learner.tenants import TenantLimit

    tenants = _tenants(request)
    try:
        tenant, created = await tenants.create(body.name)
    except TenantLimit as exc:
        raise APIError(f"{exc}; no tenant was created.", 409, param="name", code="tenant_limit") from None
    except ValueError as exc:
        raise APIError(f"'{quote(body.name)}' cannot name a tenant: {exc}.", 400, param="name",
                       code="invalid_tenant") from None
    return JSONResponse(tenants.report(tenant.name), status_code=201 if created else 200)


def tenant_cards(tenants: Any, max_model_len: int) -> list[ModelCard]:
    """``/v1/models`` entries of the tenants' models."""
    base = tenants.base_model
    return [ModelCard(id=f"{base}:{t.name}", root=f"{base}:{t.name}", parent=base, created=int(t.created),
                      max_model_len=max_model_len) for t in sorted(tenants.tenants.values(), key=lambda t: t.name)]

"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import StoreDep, TemporalDep
from api.schemas import Health

log = structlog.get_logger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (says nothing about its dependencies)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request, client: TemporalDep, store: StoreDep) -> Health | JSONResponse:
    """Ready when both Temporal and PostgreSQL answer and the schema is complete; 503
    says which one is not (the reason is logged, not sent: it may name hosts and ports)."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(
            client.service_client.check_health(timeout=timedelta(seconds=2)), timeout=3
        )
        checks["temporal"] = "ok"
    except Exception as err:  # any failure means "not ready"; the log says why
        log.warning("readiness: Temporal unavailable", error=str(err) or type(err).__name__)
        checks["temporal"] = "unavailable"
    try:
        await asyncio.wait_for(store.ping(), timeout=3)
        schema_ready = getattr(request.app.state, "schema_ready", True)
        checks["postgres"] = "ok" if schema_ready else "waiting for migrations"
    except Exception as err:
        log.warning("readiness: PostgreSQL unavailable", error=str(err) or type(err).__name__)
        checks["postgres"] = "unavailable"
    if all(v == "ok" for v in checks.values()):
        return Health(status="ok", checks=checks)
    return JSONResponse(
        status_code=503, content=Health(status="unavailable", checks=checks).model_dump()
    )

"""Prometheus metrics of the gateway, served at /metrics."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import FastAPI, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from common.errors import NotAuthenticatedError

REQUESTS = Counter(
    "durable_chat_gateway_requests_total",
    "HTTP requests answered by the gateway",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "durable_chat_gateway_request_seconds",
    "Time to answer an HTTP request (for SSE: time to the response headers)",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OPEN_STREAMS = Gauge("durable_chat_gateway_open_streams", "SSE streams currently open")


def _route_of(request: Request) -> str:
    """The route template (e.g. /api/workflows/{workflow_id}/status), not the raw path,
    so label cardinality stays bounded. Routing records it in the scope."""
    route = request.scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "unmatched"


def install_metrics(app: FastAPI) -> None:
    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = _route_of(request)
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics(authorization: Annotated[str | None, Header()] = None) -> Response:
        required = app.state.settings.metrics_api_key
        if required is not None:
            expected = f"Bearer {required.get_secret_value()}".encode()
            if not hmac.compare_digest((authorization or "").encode(), expected):
                raise NotAuthenticatedError(
                    "/metrics needs 'Authorization: Bearer <METRICS_API_KEY>'."
                )
        OPEN_STREAMS.set(request_hub_streams(app))
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def request_hub_streams(app: FastAPI) -> int:
    hub = getattr(app.state, "hub", None)
    return int(hub.open_streams) if hub is not None else 0

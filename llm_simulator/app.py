"""HTTP surface of the simulator: an OpenAI-compatible API plus ``/sim/*`` test controls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from llm_simulator.delivery import ChatCompletionJSONResponse, ChatCompletionStreamResponse
from llm_simulator.engine import GenerationEngine, GenerationRequest
from llm_simulator.faults import FaultInjector
from llm_simulator.protocol import ApiError, parse_chat_request, validate_model
from llm_simulator.settings import FaultKind, SimulatorSettings
from llm_simulator.stats import REQUEST_LOG_CAPACITY, GenerationStats, RequestLog

logger = structlog.get_logger(__name__)

#: Model id listed by ``GET /v1/models``; completions accept any model name.
SIMULATOR_MODEL_ID = "simulator"
_DEFAULT_TEMPERATURE = 1.0


@dataclass(frozen=True, slots=True)
class SimulatorState:
    """Everything one simulator app instance holds (exposed as ``app.state.simulator``)."""

    settings: SimulatorSettings
    engine: GenerationEngine
    stats: GenerationStats
    requests: RequestLog
    faults: FaultInjector


class _ArmFaultBody(BaseModel):
    """Body of ``POST /sim/faults``; omitted fields fall back to the settings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    fault: Literal["none", "http_429", "http_500", "disconnect"]
    count: int = Field(default=1, ge=0)
    after_tokens: int | None = Field(default=None, ge=0)
    retry_after_s: int | None = Field(default=None, ge=0)


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "durable-chat"}


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        payload = await request.json()
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_type")
    return payload


def _install_error_handlers(app: FastAPI) -> None:
    """Every error leaves the app as an OpenAI-style ``{"error": {...}}`` body."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error = ApiError(
            exc.status_code,
            str(exc.detail),
            code="not_found" if exc.status_code == 404 else None,
            headers=dict(exc.headers or {}),
        )
        return await api_error(_, error)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(part) for part in first.get("loc", ()) if part != "query") or None
        error = ApiError(
            400, f"Invalid value for '{param}': {first.get('msg')}.", code="invalid_value"
        )
        error.param = param
        return await api_error(_, error)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def create_app(settings: SimulatorSettings) -> FastAPI:
    """Build the simulator app.

    State (generations, statistics, request log, armed faults) lives in the returned app
    instance only; two apps never share anything. Generations still running at shutdown are
    cancelled.
    """
    stats = GenerationStats()
    state = SimulatorState(
        settings=settings,
        engine=GenerationEngine(
            ttft_s=settings.ttft_ms / 1000.0,
            tokens_per_second=settings.tokens_per_second,
            stats=stats,
        ),
        stats=stats,
        requests=RequestLog(),
        faults=FaultInjector(settings),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        logger.info(
            "sim.started",
            ttft_ms=settings.ttft_ms,
            tokens_per_second=settings.tokens_per_second,
            faults=state.faults.describe(),
        )
        yield
        await state.engine.aclose()

    app = FastAPI(
        title="durable-chat LLM simulator",
        description="OpenAI-compatible, deterministic chat completions for tests and demos.",
        lifespan=lifespan,
    )
    app.state.simulator = state
    _install_error_handlers(app)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        """OpenAI chat completions, streaming or not; text from :mod:`llm_simulator.text`."""
        body = parse_chat_request(await request.body())
        max_tokens = body.requested_max_tokens() or settings.default_max_tokens
        if max_tokens > settings.max_tokens_limit:
            param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
            raise ApiError(
                400,
                f"{param} is too large: {max_tokens}. This model supports at most "
                f"{settings.max_tokens_limit} completion tokens, whereas you provided "
                f"{max_tokens}.",
                code="invalid_value",
                param=param,
            )
        temperature = _DEFAULT_TEMPERATURE if body.temperature is None else float(body.temperature)
        messages = body.wire_messages()
        stream = bool(body.stream)
        state.requests.record(
            model=body.model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            stream=stream,
        )

        fault = state.faults.take()
        if fault is not None and fault.kind is FaultKind.HTTP_429:
            logger.info("sim.fault.http_429", retry_after_s=fault.retry_after_s)
            raise ApiError(
                429,
                "Rate limit reached for requests (simulated fault). Please try again in "
                f"{fault.retry_after_s}s.",
                error_type="requests",
                code="rate_limit_exceeded",
                headers={"retry-after": str(fault.retry_after_s)},
            )
        if fault is not None and fault.kind is FaultKind.HTTP_500:
            logger.info("sim.fault.http_500")
            raise ApiError(
                500,
                "The server had an error while processing your request (simulated fault).",
                error_type="server_error",
                code="internal_error",
            )
        cut_after = (
            fault.after_tokens if fault is not None and fault.kind is FaultKind.DISCONNECT else None
        )

        generation = state.engine.start(
            GenerationRequest(
                model=body.model,
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                prompt=body.last_user_prompt(),
            )
        )
        if stream:
            return ChatCompletionStreamResponse(
                generation=generation,
                engine=state.engine,
                prompt_tokens=body.prompt_tokens(),
                include_usage=body.include_usage(),
                cut_after=cut_after,
            )
        return ChatCompletionJSONResponse(
            generation=generation,
            engine=state.engine,
            prompt_tokens=body.prompt_tokens(),
            cut_after=cut_after,
        )

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        """OpenAI model list (any model name is accepted by completions)."""
        return {"object": "list", "data": [_model_object(SIMULATOR_MODEL_ID)]}

    @app.get("/v1/models/{model_id}")
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        """Echoes any model id: the simulator serves every model name."""
        return _model_object(model_id)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness probe."""
        return {"status": "ok", "simulator": True}

    @app.get("/sim/stats")
    async def get_stats() -> dict[str, Any]:
        """Generations started/completed, globally and per last user message."""
        return state.stats.snapshot()

    @app.get("/sim/requests")
    async def get_requests(
        limit: int = Query(default=50, ge=1, le=REQUEST_LOG_CAPACITY),
    ) -> list[dict[str, Any]]:
        """The ``limit`` most recent chat completion requests, newest last."""
        return state.requests.recent(limit)

    @app.get("/sim/faults")
    async def get_faults() -> dict[str, Any]:
        """What fault is armed and for how many more requests."""
        return state.faults.describe()

    @app.post("/sim/faults")
    async def arm_faults(request: Request) -> dict[str, Any]:
        """Arm a fault for the next ``count`` generation requests (replaces any armed one)."""
        body = validate_model(_ArmFaultBody, await _json_object(request))
        state.faults.arm(
            FaultKind(body.fault),
            body.count,
            after_tokens=body.after_tokens,
            retry_after_s=body.retry_after_s,
        )
        return state.faults.describe()

    @app.delete("/sim/faults")
    async def disarm_faults() -> dict[str, Any]:
        """Disarm any fault."""
        state.faults.disarm()
        return state.faults.describe()

    @app.post("/sim/reset")
    async def reset() -> dict[str, Any]:
        """Forget statistics and recorded requests and disarm faults (running generations go on)."""
        state.stats.reset()
        state.requests.clear()
        state.faults.disarm()
        return {"status": "ok"}

    return app

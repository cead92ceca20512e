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

from llm_simulator.delivery import (
    ChatCompletionJSONResponse,
    ChatCompletionStreamResponse,
    ResponseEventStreamResponse,
    ResponseJSONResponse,
)
from llm_simulator.engine import Generation, GenerationEngine, GenerationRequest
from llm_simulator.faults import FaultEffects, FaultInjector
from llm_simulator.protocol import (
    ApiError,
    check_context_window,
    parse_chat_request,
    prompt_token_count,
    validate_model,
)
from llm_simulator.response_log import ResponseRecord
from llm_simulator.responses import ResponseStore, last_user_prompt, parse_response_request
from llm_simulator.settings import FaultErrorCode, FaultKind, SimulatorSettings
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
    responses: ResponseStore


class _ArmFaultBody(BaseModel):
    """Body of ``POST /sim/faults``; omitted fields fall back to the settings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    fault: Literal[
        "none",
        "http_429",
        "http_500",
        "disconnect",
        "response_failed",
        "content_filter",
        "stuck_queued",
        "stall",
        "error_event",
    ]
    count: int = Field(default=1, ge=0)
    after_tokens: int | None = Field(default=None, ge=0)
    retry_after_s: int | None = Field(default=None, ge=0)
    code: FaultErrorCode | None = None
    stall_s: float | None = Field(default=None, ge=0)


class _PaceBody(BaseModel):
    """Body of ``POST /sim/pace``."""

    model_config = ConfigDict(extra="forbid")

    tokens_per_second: float = Field(gt=0)


class _VariantBody(BaseModel):
    """Body of ``POST /sim/variant``."""

    model_config = ConfigDict(extra="forbid")

    variant: str = Field(min_length=1, max_length=100)


def _temperature(requested: float | None) -> float:
    """The sampling temperature a generation uses (the same default for every API)."""
    return _DEFAULT_TEMPERATURE if requested is None else float(requested)


def _max_tokens(settings: SimulatorSettings, requested: int | None, param: str) -> int:
    """The length of a generation: ``requested`` or the default; 400 above the limit."""
    max_tokens = requested or settings.default_max_tokens
    if max_tokens > settings.max_tokens_limit:
        raise ApiError(
            400,
            f"{param} is too large: {max_tokens}. This model supports at most "
            f"{settings.max_tokens_limit} completion tokens, whereas you provided "
            f"{max_tokens}.",
            code="invalid_value",
            param=param,
        )
    return max_tokens


def _take_fault(
    faults: FaultInjector, *, responses_stream: bool, connection_bound: bool
) -> tuple[FaultKind | None, FaultEffects]:
    """Apply the fault armed for this generation request, if any.

    Raises the simulated 429/500 (no generation is started); otherwise returns the kind of the
    fault taken (``None`` if none) and its effects on the generation and its connection.
    """
    fault = faults.take()
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
    if fault is None:
        return None, FaultEffects()
    logger.info("sim.fault", fault=fault.kind.value, after_tokens=fault.after_tokens)
    effects = fault.effects(responses_stream=responses_stream, connection_bound=connection_bound)
    return fault.kind, effects


def _start_generation(
    state: SimulatorState,
    api: str,
    request: GenerationRequest,
    *,
    stream: bool,
    connection_bound: bool,
    complete_on_finish: bool = False,
    **logged: Any,
) -> tuple[Generation, FaultEffects, dict[str, Any]]:
    """Record a generation request, apply the armed fault, then start the generation.

    Every valid request is recorded, even one a fault refuses (the simulated 429/500 is raised
    before any generation starts). Returns the generation, the fault's effects (whose
    ``connection`` the delivery applies), and the request log entry (to complete later);
    ``logged`` is added to the entry as it is.
    """
    entry = state.requests.record(
        api=api,
        model=request.model,
        messages=request.messages,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        stream=stream,
        **logged,
    )
    kind, effects = _take_fault(
        state.faults,
        responses_stream=api == "responses" and stream,
        connection_bound=connection_bound,
    )
    entry["fault"] = None if kind is None else kind.value
    generation = state.engine.start(
        request, plan=effects.plan, complete_on_finish=complete_on_finish
    )
    return generation, effects, entry


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
        responses=ResponseStore(settings.response_ttl_s),
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
        description="OpenAI-compatible, deterministic chat completions and Responses API "
        "(background mode, resume, cancel) for tests and demos.",
        lifespan=lifespan,
    )
    app.state.simulator = state
    _install_error_handlers(app)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        """OpenAI chat completions, streaming or not; text from :mod:`llm_simulator.text`."""
        body = parse_chat_request(await request.body())
        max_tokens = _max_tokens(
            settings,
            body.requested_max_tokens(),
            "max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        )
        prompt_tokens = body.prompt_tokens()
        check_context_window(
            window=settings.context_window,
            input_tokens=prompt_tokens,
            requested_output=body.requested_max_tokens(),
            api="chat.completions",
        )
        generation, effects, _ = _start_generation(
            state,
            "chat.completions",
            GenerationRequest(
                model=body.model,
                messages=body.wire_messages(),
                max_tokens=max_tokens,
                temperature=_temperature(body.temperature),
                prompt=body.last_user_prompt(),
                input_tokens=prompt_tokens,
            ),
            stream=bool(body.stream),
            connection_bound=True,
        )
        if body.stream:
            return ChatCompletionStreamResponse(
                generation=generation,
                engine=state.engine,
                prompt_tokens=prompt_tokens,
                include_usage=body.include_usage(),
                fault=effects.connection,
            )
        return ChatCompletionJSONResponse(
            generation=generation,
            engine=state.engine,
            prompt_tokens=prompt_tokens,
            fault=effects.connection,
        )

    @app.post("/v1/responses", response_model=None)
    async def create_response(request: Request) -> Response:
        """OpenAI Responses API: create a response, streamed or not, in background or not.

        The text is exactly the chat completion of the equivalent messages (instructions as a
        system message, then the input). The response counts as one generation, completed
        when its last token is produced. Without ``background`` a client that goes away
        cancels it; with ``background`` it is ``queued`` until it starts, runs to the end and
        can be retrieved, resumed (``GET ...?stream=true&starting_after=N``) and cancelled by
        id. With ``SIM_BACKGROUND_SUPPORTED=false`` ``background`` is ignored and nothing is
        stored.
        """
        body = parse_response_request(
            await _json_object(request), background_supported=settings.background_supported
        )
        max_tokens = _max_tokens(settings, body.max_output_tokens, "max_output_tokens")
        temperature = _temperature(body.temperature)
        messages = body.chat_messages()
        input_tokens = prompt_token_count(str(message["content"]) for message in messages)
        check_context_window(
            window=settings.context_window,
            input_tokens=input_tokens,
            requested_output=body.max_output_tokens,
            api="responses",
        )
        stream = bool(body.stream)
        background = bool(body.background)
        generation, effects, entry = _start_generation(
            state,
            "responses",
            GenerationRequest(
                model=body.model,
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                prompt=last_user_prompt(messages),
                input_tokens=input_tokens,
            ),
            stream=stream,
            connection_bound=not background,
            complete_on_finish=True,
            background=background,
            response_id=None,
        )
        record = ResponseRecord(
            generation=generation,
            model=body.model,
            instructions=body.instructions,
            max_output_tokens=body.max_output_tokens,
            temperature=temperature,
            background=background,
            store=body.store is not False,
            error_event_after=effects.error_event_after,
            error_code=effects.error_code,
        )
        entry["response_id"] = record.id
        if record.store and settings.background_supported:
            state.responses.add(record)
        logger.debug(
            "sim.response.created", response_id=record.id, background=background, stream=stream
        )
        if stream:
            return ResponseEventStreamResponse(record=record, fault=effects.connection)
        return ResponseJSONResponse(record=record, fault=effects.connection)

    @app.get("/v1/responses/{response_id}", response_model=None)
    async def retrieve_response(
        response_id: str,
        stream: bool = False,
        starting_after: int | None = None,
    ) -> Response:
        """A stored response as it is now, or (``stream=true``) its events after
        ``starting_after``: those already produced, then live ones until the terminal event.

        Only background responses can be streamed again. Unknown ids, responses created with
        ``store=false`` and responses that ended more than ``SIM_RESPONSE_TTL_S`` ago get 404.
        """
        record = state.responses.get(response_id)
        if not stream:
            return JSONResponse(record.current_object())
        if not record.background:
            raise ApiError(
                400,
                "This response cannot be streamed because it was not created with background=true.",
                code="invalid_value",
                param="stream",
            )
        return ResponseEventStreamResponse(record=record, starting_after=starting_after)

    @app.post("/v1/responses/{response_id}/cancel")
    async def cancel_response(response_id: str) -> dict[str, Any]:
        """Stop a queued or running background response now; it stays retrievable as
        ``cancelled`` and an attached stream ends with its terminal event.

        Cancelling a cancelled response answers it again (idempotent); a response that ended
        otherwise (completed, incomplete, failed) or was not created in background gets a 400,
        as OpenAI answers.
        """
        record = state.responses.get(response_id)
        if not record.background:
            raise ApiError(400, "Cannot cancel a synchronous response.")
        status = record.status
        if status in ("completed", "failed"):
            raise ApiError(400, f"Cannot cancel a {status} response.")
        if status == "incomplete":
            raise ApiError(400, "Cannot cancel an incomplete response.")
        record.generation.cancel()
        logger.info(
            "sim.response.cancelled",
            response_id=record.id,
            tokens_produced=record.generation.produced,
        )
        return record.current_object()

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str) -> dict[str, Any]:
        """Forget a stored response at once (a running one is cancelled first)."""
        record = state.responses.remove(response_id)
        record.generation.cancel()
        return {"id": record.id, "object": "response", "deleted": True}

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
        """Generations started/completed, globally and per last user message, and the input
        and output tokens billed in total (output: every token produced, including those of
        failed, cancelled and disconnected generations)."""
        return state.stats.snapshot()

    @app.get("/sim/requests")
    async def get_requests(
        limit: int = Query(default=50, ge=1, le=REQUEST_LOG_CAPACITY),
    ) -> list[dict[str, Any]]:
        """The ``limit`` most recent generation requests, newest last.

        Each entry says which ``api`` it came through (``chat.completions`` or ``responses``)
        and which ``fault`` it got (``None`` if none); Responses API entries also carry
        ``background`` (as applied) and the ``response_id`` created.
        """
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
            code=body.code,
            stall_s=body.stall_s,
        )
        return state.faults.describe()

    @app.delete("/sim/faults")
    async def disarm_faults() -> dict[str, Any]:
        """Disarm any fault."""
        state.faults.disarm()
        return state.faults.describe()

    @app.post("/sim/pace")
    async def set_pace(request: Request) -> dict[str, Any]:
        """Produce generations started from now on at ``tokens_per_second`` (a slower or
        faster provider, e.g. so that a test has time to kill a worker mid-generation)."""
        body = validate_model(_PaceBody, await _json_object(request))
        state.engine.set_pace(body.tokens_per_second)
        return {"tokens_per_second": state.engine.tokens_per_second}

    @app.delete("/sim/pace")
    async def reset_pace() -> dict[str, Any]:
        """Back to ``SIM_TOKENS_PER_SECOND``."""
        state.engine.set_pace(None)
        return {"tokens_per_second": state.engine.tokens_per_second}

    @app.post("/sim/variant")
    async def set_variant(request: Request) -> dict[str, Any]:
        """Answer requests started from now on with another reply than usual (what a real
        model does when it samples again: e.g. a chat an operator reset re-generates a
        different answer)."""
        body = validate_model(_VariantBody, await _json_object(request))
        state.engine.set_variant(body.variant)
        return {"variant": state.engine.variant}

    @app.delete("/sim/variant")
    async def reset_variant() -> dict[str, Any]:
        """Back to the usual replies."""
        state.engine.set_variant("")
        return {"variant": state.engine.variant}

    @app.post("/sim/reset")
    async def reset() -> dict[str, Any]:
        """Forget statistics and recorded requests and disarm faults (running generations go on)."""
        state.stats.reset()
        state.requests.clear()
        state.faults.disarm()
        state.engine.set_pace(None)
        state.engine.set_variant("")
        return {"status": "ok"}

    return app

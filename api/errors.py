"""Exception handlers: every error leaves the gateway as JSON with a clear message.

Two shapes, by path. Under `/v1` (the OpenAI-compatible API) errors have OpenAI's
shape, `{"error": {"message", "type", "param", "code"}}`, with the status codes the
`openai` SDKs map to their exception classes (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 409 ConflictError, 429 RateLimitError, 5xx
InternalServerError); a request body the schema refuses is a 400 there, as at OpenAI.
Everywhere else (`/api`) they are `{"detail": ...}` as FastAPI's own.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from common.errors import (
    ChatNotFoundError,
    ChatNotRetryableError,
    DependencyUnavailableError,
    InvalidPromptError,
    InvalidRequestError,
    ModelNotAllowedError,
    NotAuthenticatedError,
    RateLimitedError,
    RequestConflictError,
)

log = structlog.get_logger(__name__)

V1_PREFIX = "/v1/"
_NEVER_CONNECTED = "Failed client connect"


class PromptTooLargeError(InvalidPromptError):
    """The prompt exceeds MAX_PROMPT_CHARS (answered 413)."""


def is_v1(request: Request) -> bool:
    return request.url.path.startswith(V1_PREFIX)


def openai_error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object (`openai.types.shared.ErrorObject`), wrapped in `error`."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _reply(
    request: Request,
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    detail_extra: dict[str, Any] | None = None,
    v1_status: int | None = None,
) -> JSONResponse:
    if is_v1(request):
        return JSONResponse(
            status_code=v1_status or status,
            content=openai_error_body(message, type_, code, param),
            headers=headers,
        )
    return JSONResponse(
        status_code=status, content={"detail": message, **(detail_extra or {})}, headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ChatNotFoundError)
    async def not_found(request: Request, exc: ChatNotFoundError) -> JSONResponse:
        return _reply(request, 404, exc.message, type_="invalid_request_error", code=exc.code)

    @app.exception_handler(ChatNotRetryableError)
    async def not_retryable(request: Request, exc: ChatNotRetryableError) -> JSONResponse:
        return _reply(request, 409, str(exc), type_="invalid_request_error")

    @app.exception_handler(RequestConflictError)
    async def conflict(request: Request, exc: RequestConflictError) -> JSONResponse:
        return _reply(request, 409, str(exc), type_="invalid_request_error", code=exc.code)

    @app.exception_handler(InvalidRequestError)
    async def invalid_request(request: Request, exc: InvalidRequestError) -> JSONResponse:
        status = 413 if isinstance(exc, PromptTooLargeError) else 422
        return _reply(
            request,
            status,
            str(exc),
            type_="invalid_request_error",
            code=exc.code,
            param=exc.param,
            # OpenAI answers a malformed request 400; a model this deployment does not
            # allow is 422 everywhere (the SDKs raise UnprocessableEntityError).
            v1_status=422 if isinstance(exc, ModelNotAllowedError) else 400,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> Response:
        if not is_v1(request):
            return await request_validation_exception_handler(request, exc)
        first = exc.errors()[0] if exc.errors() else {}
        location = [str(part) for part in first.get("loc", ()) if part not in ("body",)]
        param = ".".join(location) or None
        message = first.get("msg", "Invalid request.")
        return _reply(
            request,
            400,
            f"{message}{f' (at {param})' if param else ''}.",
            type_="invalid_request_error",
            code="invalid_value",
            param=param,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not is_v1(request):
            return await http_exception_handler(request, exc)
        message = (
            f"Unknown request URL: {request.method} {request.url.path}."
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return _reply(
            request,
            exc.status_code,
            message,
            type_="invalid_request_error",
            code="unknown_url" if exc.status_code in (404, 405) else None,
        )

    @app.exception_handler(NotAuthenticatedError)
    async def not_authenticated(request: Request, exc: NotAuthenticatedError) -> JSONResponse:
        return _reply(
            request,
            401,
            str(exc),
            type_="invalid_request_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(RateLimitedError)
    async def rate_limited(request: Request, exc: RateLimitedError) -> JSONResponse:
        return _reply(
            request,
            429,
            str(exc),
            type_="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(exc.retry_after_s)},
            detail_extra={"retry_after_s": exc.retry_after_s},
        )

    @app.exception_handler(DependencyUnavailableError)
    async def unavailable(request: Request, exc: DependencyUnavailableError) -> JSONResponse:
        return _reply(
            request,
            503,
            str(exc),
            type_="server_error",
            code="service_unavailable",
            headers={"Retry-After": "2"},
            detail_extra={"unavailable": exc.dependency},
        )

    @app.exception_handler(RPCError)
    async def temporal_error(request: Request, exc: RPCError) -> JSONResponse:
        if exc.status in (
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.CANCELLED,  # the SDK's own rpc_timeout expiring
        ):
            return _reply(
                request,
                503,
                f"Temporal is unavailable: {exc.message}",
                type_="server_error",
                code="service_unavailable",
                headers={"Retry-After": "2"},
                detail_extra={"unavailable": "Temporal"},
            )
        log.error("Temporal call failed", status=str(exc.status), error=exc.message)
        return _reply(request, 502, f"Temporal error: {exc.message}", type_="server_error")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, RuntimeError) and str(exc).startswith(_NEVER_CONNECTED):
            # The gateway's Temporal client is lazy; until its first connection succeeds
            # the SDK raises a plain RuntimeError (no RPCError, no type to catch).
            return _reply(
                request,
                503,
                "Temporal is unavailable: the gateway cannot connect to it yet.",
                type_="server_error",
                code="service_unavailable",
                headers={"Retry-After": "2"},
                detail_extra={"unavailable": "Temporal"},
            )
        log.exception("unhandled error", path=request.url.path)
        return _reply(
            request,
            500,
            f"Internal error ({type(exc).__name__}); see logs.",
            type_="server_error",
        )

"""Exception handlers: every error leaves the gateway as JSON with a clear message."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from temporalio.service import RPCError, RPCStatusCode

from common.errors import (
    ChatNotFoundError,
    ChatNotRetryableError,
    DependencyUnavailableError,
    InvalidPromptError,
    InvalidRequestError,
    NotAuthenticatedError,
    RateLimitedError,
)

log = structlog.get_logger(__name__)


class PromptTooLargeError(InvalidPromptError):
    """The prompt exceeds MAX_PROMPT_CHARS (answered 413)."""


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ChatNotFoundError)
    async def not_found(_: Request, exc: ChatNotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": f"No chat with id {exc}."})

    @app.exception_handler(ChatNotRetryableError)
    async def not_retryable(_: Request, exc: ChatNotRetryableError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(InvalidRequestError)
    async def invalid_request(_: Request, exc: InvalidRequestError) -> JSONResponse:
        status = 413 if isinstance(exc, PromptTooLargeError) else 422
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    @app.exception_handler(NotAuthenticatedError)
    async def not_authenticated(_: Request, exc: NotAuthenticatedError) -> JSONResponse:
        return JSONResponse(
            status_code=401, content={"detail": str(exc)}, headers={"WWW-Authenticate": "Bearer"}
        )

    @app.exception_handler(RateLimitedError)
    async def rate_limited(_: Request, exc: RateLimitedError) -> JSONResponse:
        return JSONResponse(
            status_code=429,
            content={"detail": str(exc), "retry_after_s": exc.retry_after_s},
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    @app.exception_handler(DependencyUnavailableError)
    async def unavailable(_: Request, exc: DependencyUnavailableError) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            content={"detail": str(exc), "unavailable": exc.dependency},
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(RPCError)
    async def temporal_error(_: Request, exc: RPCError) -> JSONResponse:
        if exc.status in (
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.CANCELLED,  # the SDK's own rpc_timeout expiring
        ):
            return JSONResponse(
                status_code=503,
                content={
                    "detail": f"Temporal is unavailable: {exc.message}",
                    "unavailable": "Temporal",
                },
                headers={"Retry-After": "2"},
            )
        log.error("Temporal call failed", status=str(exc.status), error=exc.message)
        return JSONResponse(status_code=502, content={"detail": f"Temporal error: {exc.message}"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return JSONResponse(
            status_code=500, content={"detail": f"Internal error ({type(exc).__name__}); see logs."}
        )

"""How provider trouble becomes a Temporal error: retried or final, always short.

Transient trouble (5xx, 429, broken or idle streams, a `response.failed` with a
server-side code) is retried by Temporal until `LLM_OUTAGE_TOLERANCE_S` has passed
since the chat first asked; then the chat fails with `ProviderOutageError`, which the
user can retry in one action. Answers no retry can change (a 4xx, a prompt over the
model's context, a refusal) fail at once with the provider's own words.

Every message is cut to `MAX_MESSAGE_CHARS` and raised without its Python cause: the
server keeps an activity's last failure only up to 4 KB (beyond it the Temporal UI
shows "Failure exceeds size limit"), and the cause is in the worker's log anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import openai
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from common.models import GeneratedText

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_MESSAGE_CHARS = 400

# HTTP answers that no retry can change: bad request, bad key, unknown model.
NON_RETRYABLE_STATUS = {400, 401, 403, 404, 413, 422}

# `response.failed` codes (openai.types.responses.ResponseError) worth a new generation;
# every other code (invalid_prompt, policy refusals, bad images) is final.
TRANSIENT_RESPONSE_ERRORS = {"server_error", "rate_limit_exceeded", "vector_store_timeout"}


@dataclass(frozen=True)
class ProviderLimits:
    """How long a worker waits on a provider (settings `LLM_*`, see the README)."""

    idle_timeout_s: float = 30.0
    queued_timeout_s: float = 120.0
    outage_tolerance_s: float = 300.0


class ProviderTrouble(Exception):
    """Transient trouble found by our own code (an idle or interrupted stream)."""


class ProviderRefusal(Exception):
    """The provider ended the generation in a way no retry changes; the message says why."""


class ProviderCancelled(Exception):
    """The provider reports the generation cancelled, and the chat did not ask for it."""


class QueuedTooLong(Exception):
    """A background response never left `queued`; it was cancelled at the provider."""


async def next_within(events: AsyncIterator[T], timeout_s: float) -> T:
    """The stream's next event, or TimeoutError after `timeout_s` (the stream is then
    closed). On the per-token path: `asyncio.timeout` schedules a timer, where
    `asyncio.wait_for` would wrap every event in a Task (3.5 against 9.1 µs an event)."""
    async with asyncio.timeout(timeout_s):
        return await anext(events)


def short(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(err: openai.APIError) -> str:
    """The provider's own message from an error body, else the client's."""
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return err.message


def error_code(err: openai.APIError) -> str | None:
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("code") is not None:
            return str(inner["code"])
    return err.code


async def provider_errors(call: Awaitable[GeneratedText], tolerance_s: float) -> GeneratedText:
    """Await a generation; map provider errors to Temporal errors (retryable or not)."""
    try:
        return await call
    except openai.RateLimitError as err:
        delay = _retry_after(err)
        raise _transient(
            f"The LLM provider is rate limiting (429); retrying in {delay:.0f} s.",
            "ProviderRateLimitedError",
            tolerance_s,
            err,
            next_retry_delay=timedelta(seconds=delay),
        ) from None
    except openai.APIStatusError as err:
        message = f"The LLM provider answered {err.status_code}: {error_text(err)}"
        if err.status_code in NON_RETRYABLE_STATUS:
            raise _final(message, "ProviderRejectedError", err) from None
        raise _transient(message, "ProviderUnavailableError", tolerance_s, err) from None
    except (
        openai.APIConnectionError,
        openai.APIResponseValidationError,
        httpx.TransportError,
    ) as err:
        message = f"The connection to the LLM provider failed: {err or type(err).__name__}"
        raise _transient(message, "ProviderUnavailableError", tolerance_s, err) from None
    except openai.APIError as err:  # an error sent inside the stream
        code = error_code(err)
        message = f"The LLM provider reported an error mid-answer: {error_text(err)}"
        if code is not None and code not in TRANSIENT_RESPONSE_ERRORS and code != "internal_error":
            raise _final(f"{message} ({code})", "ProviderRejectedError", err) from None
        raise _transient(message, "ProviderUnavailableError", tolerance_s, err) from None
    except ProviderTrouble as err:
        raise _transient(str(err), "ProviderUnavailableError", tolerance_s, err) from None
    except ProviderRefusal as err:
        raise _final(str(err), "ProviderRejectedError", err) from None
    except ProviderCancelled as err:
        raise _final(str(err), "ProviderCancelledError", err) from None
    except QueuedTooLong as err:
        raise _final(str(err), "ProviderQueueTimeoutError", err) from None


def _final(message: str, type_: str, err: BaseException) -> ApplicationError:
    log.warning("generation failed for good", error_type=type_, error=repr(err)[:2000])
    return ApplicationError(short(message), type=type_, non_retryable=True)


def _transient(
    message: str,
    type_: str,
    tolerance_s: float,
    err: BaseException,
    next_retry_delay: timedelta | None = None,
) -> ApplicationError:
    """A retryable error, or `ProviderOutageError` once the outage has lasted too long."""
    waited = (datetime.now(UTC) - activity.info().scheduled_time).total_seconds()
    log.warning(
        "provider trouble", error_type=type_, waited_s=round(waited, 1), error=repr(err)[:2000]
    )
    if waited >= tolerance_s:
        return ApplicationError(
            short(
                f"The LLM provider has been unavailable for {_duration(waited)} "
                f"(LLM_OUTAGE_TOLERANCE_S={tolerance_s:g}); last error: {message}",
                MAX_MESSAGE_CHARS + 120,
            ),
            type="ProviderOutageError",
            non_retryable=True,
        )
    return ApplicationError(short(message), type=type_, next_retry_delay=next_retry_delay)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def _retry_after(err: openai.APIStatusError, default_s: float = 2.0) -> float:
    value: Any = err.response.headers.get("retry-after")
    try:
        return max(0.1, float(value)) if value is not None else default_s
    except ValueError:
        return default_s

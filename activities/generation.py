"""generate_full_text: the one LLM call of a chat, streamed, with heartbeats."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import cast

import openai
import structlog
from openai.types.chat import ChatCompletionMessageParam
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.drafts import DraftPublisher
from activities.resumable import GenerationFailedAtProvider, generate_resumable, heartbeat_details
from common import metrics
from common.models import GeneratedText, GenerationMode, GenerationRequest, Usage
from storage import ChatStore

log = structlog.get_logger(__name__)

# Well under GENERATE_HEARTBEAT_TIMEOUT (3 s): two heartbeats may be lost before the
# server declares the worker dead.
HEARTBEAT_INTERVAL_S = 1.0

# Provider answers that no retry can change: bad request, bad key, unknown model.
_NON_RETRYABLE_STATUS = {400, 401, 403, 404, 422}


class GenerationActivities:
    """The LLM side of a chat, bound to one OpenAI-compatible client.

    The client must be built with `max_retries=0`: Temporal owns retries, with the
    policy in `workflows.policies`.
    """

    def __init__(self, client: openai.AsyncOpenAI, store: ChatStore) -> None:
        self._client = client
        self._store = store

    @activity.defn(name="generate_full_text")
    async def generate_full_text(self, request: GenerationRequest) -> GeneratedText:
        """Checkpoint 2: stream the whole answer from the provider and return it.

        Its result is recorded in the workflow history, so once it has completed the
        LLM is never called again for this chat, whatever crashes later. While tokens
        runs it heartbeats every second (progress: characters so far), so a dead worker
        is noticed within the heartbeat timeout and the call is retried elsewhere.
        Streamed text is published as live `delta` events (see activities.drafts); a
        retry first publishes a `reset`, so viewers never see text twice.

        Errors: 429 is retried after the provider's Retry-After; 5xx and broken
        connections are retried with backoff; 4xx answers raise a non-retryable
        `ProviderRejectedError`.
        """
        info = activity.info()
        drafts = DraftPublisher(self._store, request.workflow_id, info.attempt)
        resumable = request.mode == GenerationMode.RESUME
        heartbeats = asyncio.create_task(
            _heartbeat_every(
                HEARTBEAT_INTERVAL_S,
                lambda: heartbeat_details(drafts) if resumable else drafts.chars,
                # The first heartbeat goes out unthrottled: make it carry the response
                # id, which a retry needs to re-attach.
                ready=(lambda: drafts.response_id is not None) if resumable else None,
            )
        )
        meter = activity.metric_meter()
        if info.attempt > 1:
            meter.create_counter(metrics.LLM_RETRIES).add(1, {"mode": request.mode.value})
        try:
            if resumable:
                generated = await _provider_errors(
                    generate_resumable(self._client, self._store, request, drafts)
                )
            else:
                if info.attempt > 1:
                    log.warning("generation retried: the provider is asked again")
                    await drafts.restart(
                        f"The answer restarted after a worker failure or a provider error "
                        f"(attempt {info.attempt}); this provider cannot resume a generation."
                    )
                generated = await _provider_errors(self._stream(request, drafts))
        finally:
            heartbeats.cancel()
        tokens = meter.create_counter(metrics.LLM_TOKENS)
        tokens.add(generated.usage.prompt_tokens, {"kind": "prompt"})
        tokens.add(generated.usage.completion_tokens, {"kind": "completion"})
        return generated

    async def _stream(self, request: GenerationRequest, drafts: DraftPublisher) -> GeneratedText:
        parts: list[str] = []
        usage: Usage | None = None
        finish_reason: str | None = None
        model = request.model
        stream = await self._client.chat.completions.create(
            model=request.model,
            messages=[_message(t.role, t.content) for t in request.messages],
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for event in stream:
                model = event.model or model
                if event.usage is not None:
                    usage = Usage(
                        prompt_tokens=event.usage.prompt_tokens,
                        completion_tokens=event.usage.completion_tokens,
                    )
                for choice in event.choices:
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        await drafts.add(choice.delta.content)
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        await drafts.flush()
        text = "".join(parts)
        if usage is None:  # some OpenAI-compatible servers send no usage: count roughly
            prompt_words = sum(len(t.content.split()) for t in request.messages)
            usage = Usage(prompt_tokens=prompt_words, completion_tokens=len(text.split()))
        log.info("generation finished", chars=len(text), completion_tokens=usage.completion_tokens)
        return GeneratedText(text=text, usage=usage, model=model, finish_reason=finish_reason)


async def _heartbeat_every(
    interval_s: float,
    progress: Callable[[], object],
    ready: Callable[[], bool] | None = None,
    max_wait_s: float = 1.5,
) -> None:
    """Heartbeat on a clock, not per token: a provider slow to send its first token
    must not look like a dead worker. Cancellation requests arrive through these.
    With `ready`, the first heartbeat waits (up to `max_wait_s`) until it is true."""
    waited = 0.0
    while ready is not None and not ready() and waited < max_wait_s:
        await asyncio.sleep(0.02)
        waited += 0.02
    while True:
        activity.heartbeat(progress())
        await asyncio.sleep(interval_s)


async def _provider_errors(call: Awaitable[GeneratedText]) -> GeneratedText:
    """Await a generation; map provider errors to Temporal errors (retryable or not)."""
    try:
        return await call
    except openai.RateLimitError as err:
        delay = _retry_after(err)
        raise ApplicationError(
            f"The LLM provider is rate limiting (429); retrying in {delay:.0f} s.",
            type="ProviderRateLimitedError",
            next_retry_delay=timedelta(seconds=delay),
        ) from err
    except openai.APIStatusError as err:
        message = f"The LLM provider answered {err.status_code}: {_error_text(err)}"
        if err.status_code in _NON_RETRYABLE_STATUS:
            raise ApplicationError(
                message, type="ProviderRejectedError", non_retryable=True
            ) from err
        raise ApplicationError(message, type="ProviderUnavailableError") from err
    except (openai.APIConnectionError, openai.APIResponseValidationError) as err:
        raise ApplicationError(
            f"The connection to the LLM provider failed: {err}", type="ProviderUnavailableError"
        ) from err

    except GenerationFailedAtProvider as err:
        raise ApplicationError(str(err), type="ProviderUnavailableError") from err


def _message(role: str, content: str) -> ChatCompletionMessageParam:
    return cast(ChatCompletionMessageParam, {"role": role, "content": content})


def _retry_after(err: openai.APIStatusError, default_s: float = 2.0) -> float:
    value = err.response.headers.get("retry-after")
    try:
        return max(0.1, float(value)) if value is not None else default_s
    except ValueError:
        return default_s


def _error_text(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return err.message

"""Resumable generation: OpenAI's Responses API in background mode.

The generation is created once with `background=True, stream=True`; the provider keeps
generating whether or not anybody is attached. The response id and the sequence number
of the last delta viewers have are kept in the activity's heartbeat details and in the
chat's event log, so an attempt that replaces a dead worker re-attaches with
`GET /v1/responses/{id}?stream=true&starting_after=N` and continues where the preview
stopped: the provider generates the answer once, the viewer's text never restarts.

Every end OpenAI documents for a response is handled (`openai.types.responses`):
`completed` is the answer; `incomplete` is an answer too, cut at `max_output_tokens`
(finish reason `length`) or stopped by the content filter; `failed` with a server-side
code starts a new generation, any other code fails the chat for good; `cancelled`
(by someone else than this chat) ends it as cancelled; a response still `queued` after
`LLM_QUEUED_TIMEOUT_S` is cancelled and fails the chat. A stream that goes quiet for
`LLM_STREAM_IDLE_TIMEOUT_S`, ends early or sends an `error` event is re-attached, after
asking the provider (a plain retrieve) where the response stands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import httpx
import openai
import structlog
from openai.types.responses import Response, ResponseInputParam, ResponseStreamEvent
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from activities.billing import CallLedger, estimate_tokens
from activities.drafts import DraftPublisher
from activities.provider import (
    TRANSIENT_RESPONSE_ERRORS,
    ProviderCancelled,
    ProviderLimits,
    ProviderRefusal,
    ProviderTrouble,
    QueuedTooLong,
    next_within,
)
from common.closes import RPC_TIMEOUT
from common.models import (
    FinishReason,
    GeneratedText,
    GenerationMode,
    GenerationRequest,
    Usage,
)
from storage import ChatStore

log = structlog.get_logger(__name__)

# A cut connection is re-attached within the same attempt this many times before the
# attempt fails (and Temporal retries it, which re-attaches again).
REATTACH_LIMIT = 3
# A `response.failed` with a server-side code is answered with a new generation this
# many times within one attempt (then the attempt fails, and Temporal retries it).
FRESH_GENERATION_LIMIT = 2

_INCOMPLETE_REASONS = {
    "max_output_tokens": FinishReason.LENGTH.value,
    "content_filter": FinishReason.CONTENT_FILTER.value,
}


@dataclass(frozen=True)
class ResumePoint:
    """Where a previous attempt left the generation: its id and the last delta seen."""

    response_id: str
    seq: int | None

    @classmethod
    def from_heartbeat(cls, details: Sequence[Any]) -> ResumePoint | None:
        if not details or not isinstance(details[-1], dict):
            return None
        response_id = details[-1].get("response_id")
        if not isinstance(response_id, str):
            return None
        seq = details[-1].get("seq")
        return cls(response_id, seq if isinstance(seq, int) else None)


def heartbeat_details(drafts: DraftPublisher) -> dict[str, Any]:
    return {
        "response_id": drafts.response_id,
        "seq": drafts.published_seq,
        "chars": drafts.published_chars,
    }


class StreamInterrupted(ProviderTrouble):
    """The provider's stream ended, went quiet or sent an `error` event before the
    generation ended: ask where the response stands, then re-attach."""


class FailedTransiently(Exception):
    """The provider failed the generation with a server-side code: generate again."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code


async def generate_resumable(
    client: openai.AsyncOpenAI,
    store: ChatStore,
    request: GenerationRequest,
    drafts: DraftPublisher,
    ledger: CallLedger,
    limits: ProviderLimits,
) -> GeneratedText:
    """Run (or re-attach to) the chat's background generation until it ends."""
    info = activity.info()
    previous = ResumePoint.from_heartbeat(info.heartbeat_details)
    if previous is None and info.attempt > 1:
        # A heartbeat is sent late and unconfirmed; the event log is written at once.
        previous = await _resume_point_from_log(store, drafts.workflow_id)
    starting_after = await _prepare(store, drafts, info.attempt, previous)
    if info.attempt > 1:
        await ledger.close_interrupted(except_key=drafts.response_id)
    if drafts.response_id is not None:
        await ledger.begin(drafts.response_id)  # no-op unless its first write was lost
        log.info(
            "re-attaching to the generation the previous attempt started",
            response_id=drafts.response_id,
            starting_after=starting_after,
        )
    reattached = 0
    fresh = 0
    while True:
        try:
            if drafts.response_id is None:
                events = _created_stream(client, request)
            else:
                events = _resumed_stream(client, drafts.response_id, starting_after)
            return await _consume(events, drafts, request, ledger, limits)
        except openai.NotFoundError:
            if drafts.response_id is None:
                raise
            log.warning("the provider no longer has the generation: starting a new one")
            await ledger.finish(
                drafts.response_id,
                "interrupted",
                usage=None,
                chars=drafts.chars,
                error="the provider no longer had this generation",
            )
            await drafts.start_over(
                "The provider no longer had the generation; the answer restarts."
            )
        except FailedTransiently as err:
            fresh += 1
            if fresh > FRESH_GENERATION_LIMIT:
                raise ProviderTrouble(f"The provider failed the generation again: {err}") from None
            log.warning("the provider failed the generation: starting a new one", code=err.code)
            await drafts.start_over(
                f"The provider's generation failed ({err.code}); the answer restarts."
            )
        except (openai.APIConnectionError, httpx.TransportError, StreamInterrupted) as err:
            if drafts.response_id is None or reattached >= REATTACH_LIMIT:
                raise
            reattached += 1
            drafts.discard_pending()
            log.warning("stream interrupted: asking where the generation stands", error=str(err))
            settled = await _settle(client, drafts, request, ledger, limits)
            if settled is not None:
                return settled
            starting_after = drafts.published_seq or 0
            await asyncio.sleep(0.2 * reattached)
        except asyncio.CancelledError:
            if drafts.response_id is not None and await asyncio.shield(_chat_no_longer_wants_it()):
                # the chat was cancelled or reset: stop paying for it
                billed = await asyncio.shield(cancel_at_provider(client, drafts.response_id))
                await asyncio.shield(
                    ledger.finish(drafts.response_id, "cancelled", usage=billed, chars=drafts.chars)
                )
            raise


async def _resume_point_from_log(store: ChatStore, workflow_id: str) -> ResumePoint | None:
    try:
        last = await store.last_preview_event(workflow_id)
    except Exception as err:  # database unreachable: no resume point from it
        log.warning("cannot read the resume point from the event log", error=str(err))
        return None
    if last is None or last.type != "delta" or not isinstance(last.data.get("response_id"), str):
        return None
    seq = last.data.get("seq")
    return ResumePoint(last.data["response_id"], seq if isinstance(seq, int) else None)


async def _prepare(
    store: ChatStore, drafts: DraftPublisher, attempt: int, previous: ResumePoint | None
) -> int:
    """Set `drafts` up for this attempt; return the provider seq to resume after.

    The event log is the truth about what viewers have (heartbeats lag behind it): the
    preview continues from its last delta when that delta belongs to the same
    generation. If that cannot be established, viewers get a `reset` and the whole
    generation is replayed from the provider (still one generation).
    """
    if previous is None:
        if attempt > 1:
            await drafts.restart_if_shown(
                f"The answer restarted (attempt {attempt}) after the previous attempt was "
                "interrupted before the provider confirmed the generation."
            )
        return 0
    try:
        last = await store.last_preview_event(drafts.workflow_id)
    except Exception as err:  # database unreachable: fall back to a full replay
        log.warning("cannot read the preview position; replaying the stream", error=str(err))
        last = None
    if (
        last is not None
        and last.type == "delta"
        and last.data.get("response_id") == previous.response_id
        and isinstance(last.data.get("seq"), int)
    ):
        seq = int(last.data["seq"])
        published = int(last.data["offset"]) + len(last.data["text"])
        drafts.continue_from(previous.response_id, seq, published)
        return seq
    if last is not None and last.type == "delta":
        await drafts.restart("Reconnected to the generation; the preview is rebuilt.")
    drafts.continue_from(previous.response_id, None, 0)
    return 0


async def _created_stream(
    client: openai.AsyncOpenAI, request: GenerationRequest
) -> AsyncGenerator[ResponseStreamEvent, None]:
    stream = await client.responses.create(
        model=request.model,
        input=cast(
            ResponseInputParam,
            [{"role": t.role, "content": t.content} for t in request.messages],
        ),
        max_output_tokens=request.max_tokens,
        temperature=request.temperature,
        background=True,
        stream=True,
    )
    async with stream:
        async for event in stream:
            yield event


async def _resumed_stream(
    client: openai.AsyncOpenAI, response_id: str, starting_after: int
) -> AsyncGenerator[ResponseStreamEvent, None]:
    stream = await client.responses.retrieve(
        response_id, stream=True, starting_after=starting_after
    )
    assert isinstance(stream, openai.AsyncStream)
    async with stream:
        async for event in stream:
            yield event


async def _consume(
    events: AsyncGenerator[ResponseStreamEvent, None],
    drafts: DraftPublisher,
    request: GenerationRequest,
    ledger: CallLedger,
    limits: ProviderLimits,
) -> GeneratedText:
    """Follow the stream to the generation's end; raise StreamInterrupted if it stops first."""
    queued_since: float | None = None
    try:
        while True:
            timeout = limits.idle_timeout_s
            if queued_since is not None:  # nothing comes while queued: wait for the bound
                timeout = max(0.0, queued_since + limits.queued_timeout_s - time.time())
            try:
                event = await next_within(events, timeout)
            except StopAsyncIteration:
                raise StreamInterrupted("the stream ended before the generation did") from None
            except TimeoutError:
                raise StreamInterrupted(f"no event from the provider for {timeout:.0f} s") from None
            if event.type == "response.created":
                drafts.response_id = event.response.id
                await ledger.begin(event.response.id)
                activity.heartbeat(heartbeat_details(drafts))
                # Also record the id durably at once (an empty delta naming the generation),
                # so a retry finds it even if the worker dies before the heartbeat is sent.
                await drafts.add("", provider_seq=event.sequence_number)
                if event.response.status == "queued":
                    queued_since = float(event.response.created_at or time.time())
            elif event.type == "response.queued":
                queued_since = float(event.response.created_at or time.time())
            elif event.type == "response.in_progress":
                queued_since = None
            elif event.type == "response.output_text.delta":
                queued_since = None
                await drafts.add(event.delta, provider_seq=event.sequence_number)
            elif event.type in ("response.completed", "response.incomplete", "response.failed"):
                ended = await _outcome(event.response, drafts, request, ledger)
                if ended is not None:
                    return ended
            elif event.type == "error":
                code = event.code or "error"
                raise StreamInterrupted(
                    f"the provider sent an error event: {event.message} ({code})"
                )
    finally:
        await events.aclose()


async def _outcome(
    response: Response, drafts: DraftPublisher, request: GenerationRequest, ledger: CallLedger
) -> GeneratedText | None:
    """The answer a terminal response gives (None while it is still running), or the
    exception its failure calls for. Its usage is recorded in the ledger either way."""
    status = response.status
    if status in ("queued", "in_progress", None):
        return None
    await drafts.flush()
    usage = None
    if response.usage is not None:
        usage = Usage(response.usage.input_tokens, response.usage.output_tokens)
    model = response.model or request.model
    if status == "failed":
        code = response.error.code if response.error is not None else "server_error"
        message = response.error.message if response.error is not None else "no reason given"
        await ledger.finish(
            response.id,
            "failed",
            usage=usage,
            chars=drafts.chars,
            model=model,
            error=f"{code}: {message}",
        )
        if code in TRANSIENT_RESPONSE_ERRORS:
            raise FailedTransiently(code, message)
        raise ProviderRefusal(f"The LLM provider could not answer: {message} ({code})")
    if status == "cancelled":
        await ledger.finish(response.id, "cancelled", usage=usage, chars=drafts.chars, model=model)
        raise ProviderCancelled("The generation was cancelled at the provider, not by this chat.")
    finish_reason = FinishReason.STOP.value
    if status == "incomplete":
        reason = response.incomplete_details.reason if response.incomplete_details else None
        finish_reason = _INCOMPLETE_REASONS.get(reason or "", reason or FinishReason.LENGTH.value)
    text = response.output_text
    if usage is None:
        usage = Usage(ledger.prompt_estimate, estimate_tokens(len(text)), estimated=True)
    await ledger.finish(
        response.id,
        str(status),
        usage=usage,
        chars=len(text),
        model=model,
        finish_reason=finish_reason,
    )
    log.info("generation ended", status=status, finish_reason=finish_reason, chars=len(text))
    return GeneratedText(
        text=text,
        usage=usage,
        model=model,
        finish_reason=finish_reason,
        mode=GenerationMode.RESUME.value,
    )


async def _settle(
    client: openai.AsyncOpenAI,
    drafts: DraftPublisher,
    request: GenerationRequest,
    ledger: CallLedger,
    limits: ProviderLimits,
) -> GeneratedText | None:
    """After a broken stream: the answer if the response has ended meanwhile, None if it
    is still running (re-attach); QueuedTooLong if it never left the queue."""
    assert drafts.response_id is not None
    try:
        response = await client.responses.retrieve(drafts.response_id)
    except (openai.APIConnectionError, openai.InternalServerError, httpx.TransportError):
        return None  # cannot tell now: re-attaching will
    if response.status == "queued":
        waited = time.time() - float(response.created_at)
        if waited < limits.queued_timeout_s:
            return None
        await cancel_at_provider(client, response.id)
        await ledger.finish(response.id, "cancelled", usage=Usage(), chars=0)
        raise QueuedTooLong(
            f"The LLM provider kept the generation queued for {waited:.0f} s without starting "
            f"it (LLM_QUEUED_TIMEOUT_S={limits.queued_timeout_s:g}); it was cancelled, "
            "nothing was generated."
        )
    return await _outcome(response, drafts, request, ledger)


async def _chat_no_longer_wants_it() -> bool:
    """Whether this attempt was cancelled because its chat no longer wants the answer
    (a cancel, an operator's reset or terminate), rather than because the attempt itself
    is over: an attempt that missed its heartbeats (a frozen or overloaded worker), a
    worker shutting down or an operator's pause leave the background response running
    for the next attempt, which re-attaches to it. Cancelling it there ended chats as
    `cancelled` while their next attempt was resuming (bench.load's backlog;
    tests/test_generation_resume.py).

    The server says `not_found` both to an attempt that timed out and to one whose run
    is closed (a cancelled chat closes before the next heartbeat is answered; a reset
    closes the run and starts another): Temporal's description of the chat tells them
    apart. When Temporal cannot say, the response is cancelled, as before."""
    details = activity.cancellation_details()
    if details is None or details.cancel_requested or details.reset:
        return True
    if not details.not_found:
        return False
    info = activity.info()
    if info.workflow_id is None:
        return True
    try:
        handle = activity.client().get_workflow_handle(info.workflow_id)
        description = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    except (RPCError, RuntimeError) as err:
        log.warning("cannot tell whether the chat still runs", error=str(err))
        return True
    still_this_run = description.run_id == info.workflow_run_id
    return not (still_this_run and description.status is WorkflowExecutionStatus.RUNNING)


# How long a cancel at the provider may take before the stop goes on without it.
PROVIDER_CANCEL_TIMEOUT_S = 3.0


async def cancel_at_provider(client: openai.AsyncOpenAI, response_id: str) -> Usage | None:
    """Cancel a background response; the usage the provider reports for it, if any
    (OpenAI's reference does not say whether a cancelled response has one; the
    simulator reports the tokens produced)."""
    try:
        response = await asyncio.wait_for(
            client.responses.cancel(response_id), timeout=PROVIDER_CANCEL_TIMEOUT_S
        )
    except (openai.APIError, TimeoutError) as err:
        # best effort: a provider that does not answer must not hold a stop up
        log.warning("could not cancel the generation at the provider", error=str(err) or "timeout")
        return None
    log.info("generation cancelled at the provider", response_id=response_id)
    if response.usage is None:
        return None
    return Usage(response.usage.input_tokens, response.usage.output_tokens)

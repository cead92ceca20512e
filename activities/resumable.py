"""Resumable generation: OpenAI's Responses API in background mode.

The generation is created once with `background=True, stream=True`; the provider keeps
generating whether or not anybody is attached. The response id and the sequence number
of the last delta viewers have are kept in the activity's heartbeat details and in the
chat's event log, so an attempt that replaces a dead worker re-attaches with
`GET /v1/responses/{id}?stream=true&starting_after=N` and continues where the preview
stopped: the provider generates the answer once, the viewer's text never restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import openai
import structlog
from openai.types.responses import ResponseInputParam, ResponseStreamEvent
from temporalio import activity

from activities.drafts import DraftPublisher
from common.models import GeneratedText, GenerationRequest, Usage
from storage import ChatStore

log = structlog.get_logger(__name__)

# A cut connection is re-attached within the same attempt this many times before the
# attempt fails (and Temporal retries it, which re-attaches again).
REATTACH_LIMIT = 3


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


class StreamInterrupted(Exception):
    """The provider's stream ended without a terminal event: re-attach."""


class GenerationFailedAtProvider(Exception):
    """The provider ended the generation as failed or incomplete."""


async def generate_resumable(
    client: openai.AsyncOpenAI, store: ChatStore, request: GenerationRequest, drafts: DraftPublisher
) -> GeneratedText:
    """Run (or re-attach to) the chat's background generation until it completes."""
    info = activity.info()
    previous = ResumePoint.from_heartbeat(info.heartbeat_details)
    if previous is None and info.attempt > 1:
        # A heartbeat is sent late and unconfirmed; the event log is written at once.
        previous = await _resume_point_from_log(store, drafts.workflow_id)
    starting_after = await _prepare(store, drafts, info.attempt, previous)
    if previous is not None:
        log.info(
            "re-attaching to the generation the previous attempt started",
            response_id=previous.response_id,
            starting_after=starting_after,
        )
    reattached = 0
    while True:
        try:
            if drafts.response_id is None:
                events = _created_stream(client, request)
            else:
                events = _resumed_stream(client, drafts.response_id, starting_after)
            return await _consume(events, drafts, request)
        except openai.NotFoundError:
            if drafts.response_id is None:
                raise
            log.warning("the generation expired at the provider: starting a new one")
            await drafts.start_over("The previous generation expired; the answer restarts.")
        except (openai.APIConnectionError, openai.APITimeoutError, StreamInterrupted):
            if drafts.response_id is None or reattached >= REATTACH_LIMIT:
                raise
            reattached += 1
            drafts.discard_pending()
            starting_after = drafts.published_seq or 0
            log.warning("stream cut: re-attaching", starting_after=starting_after)
            await asyncio.sleep(0.2 * reattached)
        except asyncio.CancelledError:
            if drafts.response_id is not None:  # the chat was cancelled: stop paying for it
                await asyncio.shield(_cancel_at_provider(client, drafts.response_id))
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
            await drafts.restart(
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
) -> AsyncIterator[ResponseStreamEvent]:
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
) -> AsyncIterator[ResponseStreamEvent]:
    stream = await client.responses.retrieve(
        response_id, stream=True, starting_after=starting_after
    )
    assert isinstance(stream, openai.AsyncStream)
    async with stream:
        async for event in stream:
            yield event


async def _consume(
    events: AsyncIterator[ResponseStreamEvent],
    drafts: DraftPublisher,
    request: GenerationRequest,
) -> GeneratedText:
    async for event in events:
        if event.type == "response.created":
            drafts.response_id = event.response.id
            activity.heartbeat(heartbeat_details(drafts))
            # Also record the id durably at once (an empty delta naming the generation),
            # so a retry finds it even if the worker dies before the heartbeat is sent.
            await drafts.add("", provider_seq=event.sequence_number)
        elif event.type == "response.output_text.delta":
            await drafts.add(event.delta, provider_seq=event.sequence_number)
        elif event.type == "response.completed":
            await drafts.flush()
            response = event.response
            usage = Usage()
            if response.usage is not None:
                usage = Usage(response.usage.input_tokens, response.usage.output_tokens)
            return GeneratedText(
                text=response.output_text,
                usage=usage,
                model=response.model or request.model,
                finish_reason="stop",
            )
        elif event.type in ("response.failed", "response.incomplete"):
            raise GenerationFailedAtProvider(f"the provider ended the generation: {event.type}")
    raise StreamInterrupted("the stream ended before the generation completed")


async def _cancel_at_provider(client: openai.AsyncOpenAI, response_id: str) -> None:
    try:
        await client.responses.cancel(response_id)
        log.info("generation cancelled at the provider", response_id=response_id)
    except openai.APIError as err:
        log.warning("could not cancel the generation at the provider", error=str(err))

"""What /v1 does, independent of HTTP: a response is a chat plus its `responses` row.

Creating a response writes the row first (so a crash before the workflow starts
leaves a row that a retry with the same Idempotency-Key completes), then starts one
`ChatStreamingWorkflow` through `api.chats`, the same path as `/api`: the answer
cache, single flight, limits, cost accounting and privacy are those of any chat.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client

from api import chats
from api.events import ChatEventHub, follow
from api.schemas import ChatStatus
from api.v1.objects import (
    not_found,
    outcome_of,
    response_id_for,
    response_object,
    usage_of,
    workflow_id_of,
)
from api.v1.requests import Asked
from api.v1.stream import AnswerText, Ended, ResponseEvents, TextEvent
from common.errors import ChatNotFoundError, InvalidRequestError, RequestConflictError
from common.history import recent_turns
from common.models import ChatRequest, Turn
from common.prompts import check_prompt
from common.settings import Settings
from storage import ChatStore, LimitsStore, ResponseRow, ResponseStore

_IDEMPOTENCY_NAMESPACE = uuid.UUID("0f6f2c1e-7a53-4d2f-9b0e-2f3b6c8d1a44")
_DAY_S = 86_400.0
#: How long a cancel waits for the chat to close before answering with its state.
CANCEL_WAIT_S = 10.0


@dataclass
class V1:
    """The gateway's long-lived clients, as /v1 needs them."""

    client: Client
    store: ChatStore
    responses: ResponseStore
    limits: LimitsStore
    hub: ChatEventHub
    settings: Settings


def _workflow_id(user_id: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return f"chat-{uuid.uuid4()}"
    return f"chat-{uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f'{user_id}:{idempotency_key}')}"


async def create(
    v1: V1,
    user_id: str,
    asked: Asked,
    *,
    api: str,
    background: bool,
    stored: bool,
    fingerprint: str,
    idempotency_key: str | None,
) -> ResponseRow:
    """Record the response and start its chat; with an Idempotency-Key a retried
    create returns the first one (409 when its body differs)."""
    settings = v1.settings
    check_prompt(asked.prompt, settings.max_prompt_chars)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        raise InvalidRequestError(
            "Idempotency-Key must be 1 to 200 characters.", param="Idempotency-Key"
        )
    workflow_id = _workflow_id(user_id, idempotency_key)
    response_id = response_id_for(workflow_id)
    row: ResponseRow | None = None
    if idempotency_key is not None:
        row = await chats.db_call(v1.responses.get(response_id))
    if row is None:
        await chats.check_limits(v1.client, v1.limits, settings, user_id)
        row = await chats.db_call(
            v1.responses.create(
                response_id=response_id,
                workflow_id=workflow_id,
                user_id=user_id,
                api=api,
                params=asked.params,
                messages=[*asked.history, Turn(role="user", content=asked.prompt)],
                request_hash=fingerprint,
                background=background,
                stored=stored,
                retention_s=settings.responses_retention_days * _DAY_S if stored else 0.0,
            )
        )
    if row.request_hash != fingerprint or row.api != api:
        raise RequestConflictError(
            "This Idempotency-Key was already used with a different request; use a new key "
            "for a new request.",
            code="idempotency_key_reused",
        )
    history, dropped = recent_turns(asked.history, settings.history_max_chars)
    request = ChatRequest(
        prompt=asked.prompt,
        history=history,
        system_prompt=asked.system_prompt,
        model=asked.model,
        provider=settings.provider_name,
        max_tokens=asked.max_tokens,
        temperature=asked.temperature,
        user_id=user_id,
        chunk_target_chars=settings.chunk_target_chars,
        checkpoint_window=settings.checkpoint_window,
        max_prompt_chars=settings.max_prompt_chars,
        use_cache=settings.cache_enabled,
        cache_ttl_s=settings.cache_ttl_s,
        generation_mode=settings.requested_generation_mode,
    )
    # Always keyed: the id is new or derived from the key, and a retry after a crash
    # between the row and the start must start it now.
    await chats.start_workflow(v1.client, settings, request, workflow_id, keyed=True)
    chats.log.info(
        "response started",
        workflow_id=workflow_id,
        response_id=response_id,
        api=api,
        history_turns=len(history),
        history_turns_dropped=dropped,
    )
    return row


async def load(v1: V1, user_id: str, response_id: str, *, retrievable: bool = True) -> ResponseRow:
    """The caller's response; another user's, a deleted one, or (`retrievable`) one
    created with store=false are 404s, like an unknown id."""
    workflow_id_of(response_id)  # a malformed id is a 404 before any lookup
    row = await chats.db_call(v1.responses.get(response_id))
    if row is None or row.user_id != user_id or (retrievable and not row.stored):
        raise not_found(response_id)
    return row


async def previous_turns(v1: V1, user_id: str, response_id: str) -> list[Turn]:
    """The conversation of `previous_response_id`: its turns and its answer."""
    try:
        previous = await load(v1, user_id, response_id)
    except ChatNotFoundError as err:
        raise ChatNotFoundError(
            response_id,
            f"Previous response with id '{response_id[:80]}' not found.",
        ) from err
    status = await record_status(v1, previous)
    if status is None or not outcome_of(status).answered:
        state = "running" if status is None else outcome_of(status).status
        raise InvalidRequestError(
            f"Previous response '{response_id}' is {state}: only a completed or incomplete "
            "response can be continued.",
            param="previous_response_id",
        )
    answer = await durable_text(v1.store, previous.workflow_id)
    return [*previous.messages, Turn(role="assistant", content=answer)]


async def durable_text(store: ChatStore, workflow_id: str) -> str:
    """The answer's checkpointed chunks so far, contiguous from the first."""
    parts: list[str] = []
    while True:
        page = await chats.db_call(store.get_chunks(workflow_id, len(parts), 1000))
        parts += [chunk.text for chunk in page]
        if len(page) < 1000:
            return "".join(parts)


async def record_status(v1: V1, row: ResponseRow) -> ChatStatus | None:
    """The chat's state from its record alone (None: no record yet). A terminal event
    is written together with the final record, so at a terminal event this is final."""
    generation = await chats.db_call(v1.store.get_generation(row.workflow_id))
    return None if generation is None else chats.status_from_row(v1.settings, generation, None)


def _object(row: ResponseRow, status: ChatStatus | None, text: str) -> dict[str, Any]:
    if status is None:
        return response_object(row, "queued")
    outcome = outcome_of(status)
    has_item = bool(text) or (outcome.status == "in_progress") or outcome.answered
    completed_at = status.completed_at.timestamp() if status.completed_at else None
    return response_object(
        row,
        outcome.status,
        text=text if has_item else None,
        outcome=outcome,
        usage=usage_of(status) if outcome.done else None,
        completed_at=completed_at,
    )


async def current_object(v1: V1, row: ResponseRow) -> dict[str, Any]:
    """The response now, as Temporal and the record know it (the status route's logic:
    a chat an operator terminated reads as failed at once)."""
    return _object(row, await _status(v1, row), await durable_text(v1.store, row.workflow_id))


async def _status(v1: V1, row: ResponseRow) -> ChatStatus:
    """chat_status, or the record alone once Temporal no longer keeps the chat (its
    namespace retention is shorter than the responses')."""
    try:
        return await chats.chat_status(v1.client, v1.store, v1.settings, row.workflow_id)
    except ChatNotFoundError:
        status = await record_status(v1, row)
        if status is None:
            raise not_found(row.response_id) from None
        return status


async def final_object(v1: V1, row: ResponseRow) -> dict[str, Any]:
    """The response after its terminal event, from its record."""
    status = await record_status(v1, row)
    return _object(row, status, await durable_text(v1.store, row.workflow_id))


async def chat_events(v1: V1, row: ResponseRow) -> AsyncIterator[Any]:
    """The chat's whole event log, then live events, up to its terminal one."""
    workflow_id = row.workflow_id

    async def check_closed() -> None:
        await chats.reconcile_if_closed(v1.client, v1.settings, workflow_id)

    async def still_runs(ended_run: str) -> bool:
        return await chats.runs_in_temporal(v1.client, workflow_id, other_than=ended_run)

    async for event in follow(v1.hub, v1.store, workflow_id, 0, check_closed, still_runs):
        yield event


async def response_events(
    v1: V1, row: ResponseRow, starting_after: int = -1
) -> AsyncIterator[dict[str, Any]]:
    """The Responses API events of `row` with sequence_number > `starting_after`."""
    translator = ResponseEvents(row, lambda: final_object(v1, row))
    for event in translator.start():
        if event["sequence_number"] > starting_after:
            yield event
    async for chat_event in chat_events(v1, row):
        for event in await translator.feed(chat_event):
            if event["sequence_number"] > starting_after:
                yield event


async def answer_text(v1: V1, row: ResponseRow) -> AsyncIterator[TextEvent]:
    """Text that stays (see api.v1.stream), up to the end."""
    text = AnswerText()
    async for chat_event in chat_events(v1, row):
        for step in text.feed(chat_event):
            yield step


async def wait_for_end(v1: V1, row: ResponseRow) -> tuple[ChatStatus, str]:
    """Wait for the chat's terminal event; its final state and durable answer."""
    async for step in answer_text(v1, row):
        if isinstance(step, Ended):
            break
    status = await record_status(v1, row)
    assert status is not None  # the terminal event is written with the final record
    return status, await durable_text(v1.store, row.workflow_id)


async def ensure_started(v1: V1, row: ResponseRow) -> None:
    """404 unless the chat exists (a row whose start never happened has none)."""
    await _status(v1, row)


async def cancel(v1: V1, row: ResponseRow) -> dict[str, Any]:
    """Cancel the chat, wait (briefly) for it to close, and return the response."""
    await chats.cancel_chat(v1.client, v1.store, row.workflow_id)
    try:
        await asyncio.wait_for(wait_for_end(v1, row), timeout=CANCEL_WAIT_S)
    except TimeoutError:
        chats.log.info("cancel: the chat has not closed yet", workflow_id=row.workflow_id)
    return await current_object(v1, row)


async def delete(v1: V1, row: ResponseRow) -> None:
    status = await _status(v1, row)
    if not outcome_of(status).done:
        raise RequestConflictError(
            f"Response '{row.response_id}' is still {outcome_of(status).status}: cancel it "
            f"first (POST /v1/responses/{row.response_id}/cancel), then delete it.",
            code="response_in_progress",
        )
    if not await chats.db_call(v1.responses.delete(row.response_id)):
        raise not_found(row.response_id)

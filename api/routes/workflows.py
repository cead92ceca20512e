"""/api/workflows: start a chat, follow its progress and chunks, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api import chats
from api.auth import CurrentUser
from api.deps import LimitsDep, SettingsDep, StoreDep, TemporalDep
from api.errors import PromptTooLargeError
from api.schemas import (
    ERROR_RESPONSES,
    CancelResponse,
    ChatStatus,
    ChunkPage,
    EditBody,
    ErrorBody,
    StartChatBody,
    StartChatResponse,
    TurnActionBody,
)
from common.prompts import check_prompt

router = APIRouter(prefix="/api/workflows", tags=["workflows"], responses=ERROR_RESPONSES)

WorkflowId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:@-]{1,200}$")]


@router.post(
    "/start",
    status_code=202,
    response_model=StartChatResponse,
    responses={413: {"model": ErrorBody, "description": "Prompt or max_tokens too large."}},
)
async def start(
    body: StartChatBody,
    user: CurrentUser,
    client: TemporalDep,
    store: StoreDep,
    limits: LimitsDep,
    settings: SettingsDep,
) -> StartChatResponse:
    """Start a chat; returns at once with its workflow id (follow it with status/chunks)."""
    _check_prompt(settings, body.prompt)
    if body.max_tokens is not None and body.max_tokens > settings.max_tokens_limit:
        raise PromptTooLargeError(
            f"max_tokens {body.max_tokens} is above the limit of {settings.max_tokens_limit}."
        )
    await chats.check_limits(client, limits, settings, user)
    workflow_id = await chats.start_chat(client, store, settings, body, user)
    return StartChatResponse(
        workflow_id=workflow_id,
        status="running",
        temporal_ui_url=chats.temporal_ui_link(settings, workflow_id),
    )


def _check_prompt(settings: SettingsDep, prompt: str) -> None:
    """413 for a prompt over MAX_PROMPT_CHARS, 422 for one that is not valid text."""
    if len(prompt) > settings.max_prompt_chars:
        raise PromptTooLargeError(
            f"The prompt is {len(prompt):,} characters long; "
            f"the limit is {settings.max_prompt_chars:,}."
        )
    check_prompt(prompt, settings.max_prompt_chars)


@router.get("/{workflow_id}/status", response_model=ChatStatus)
async def status(
    workflow_id: WorkflowId,
    user: CurrentUser,
    client: TemporalDep,
    store: StoreDep,
    settings: SettingsDep,
) -> ChatStatus:
    """Stage and progress, from the live workflow or, when no worker answers, PostgreSQL."""
    await chats.ensure_owner_or_unavailable(client, store, workflow_id, user)
    status = await chats.chat_status(client, store, settings, workflow_id)
    return await chats.without_foreign_source(store, status, user)


@router.get("/{workflow_id}/chunks", response_model=ChunkPage)
async def chunks(
    workflow_id: WorkflowId,
    user: CurrentUser,
    client: TemporalDep,
    store: StoreDep,
    from_id: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> ChunkPage:
    """Checkpointed chunks from cursor `from_id`, contiguous; ask again with `next_from_id`."""
    await chats.ensure_owner(client, store, workflow_id, user)
    return await chats.chunk_page(client, store, workflow_id, from_id, limit)


@router.post(
    "/{workflow_id}/cancel",
    status_code=202,
    response_model=CancelResponse,
)
async def cancel(
    workflow_id: WorkflowId, user: CurrentUser, client: TemporalDep, store: StoreDep
) -> CancelResponse:
    """Stop a running chat. While its answer is being written, the text shown so far is
    kept as its answer (stage `stopped`); before any text it ends `cancelled`."""
    await chats.ensure_owner(client, store, workflow_id, user)
    return CancelResponse(
        workflow_id=workflow_id, status=await chats.cancel_chat(client, store, workflow_id)
    )


@router.post(
    "/{workflow_id}/retry",
    status_code=202,
    response_model=StartChatResponse,
    responses={409: {"model": ErrorBody, "description": "Not failed, or a retry would fail."}},
)
async def retry(
    workflow_id: WorkflowId,
    user: CurrentUser,
    client: TemporalDep,
    store: StoreDep,
    limits: LimitsDep,
    settings: SettingsDep,
) -> StartChatResponse:
    """Ask a failed chat again (after a provider outage, say): a new chat with the same
    request, started once however often this is called. Follow it like any chat."""
    await chats.ensure_owner(client, store, workflow_id, user)
    await chats.check_limits(client, limits, settings, user)
    retry_id = await chats.retry_chat(client, store, settings, workflow_id)
    return StartChatResponse(
        workflow_id=retry_id,
        status="running",
        temporal_ui_url=chats.temporal_ui_link(settings, retry_id),
    )


def _started(settings: SettingsDep, workflow_id: str) -> StartChatResponse:
    return StartChatResponse(
        workflow_id=workflow_id,
        status="running",
        temporal_ui_url=chats.temporal_ui_link(settings, workflow_id),
    )


@router.post(
    "/{workflow_id}/regenerate",
    status_code=202,
    response_model=StartChatResponse,
    responses={409: {"model": ErrorBody, "description": "The chat has not ended."}},
)
async def regenerate(
    workflow_id: WorkflowId,
    user: CurrentUser,
    client: TemporalDep,
    store: StoreDep,
    limits: LimitsDep,
    settings: SettingsDep,
    body: TurnActionBody | None = None,
) -> StartChatResponse:
    """Ask the same turn again, without the answer cache: a new chat, another version of
    the turn (the earlier versions stay; choose one with PUT
    /api/conversations/{id}/head)."""
    await chats.ensure_owner(client, store, workflow_id, user)
    await chats.check_limits(client, limits, settings, user)
    key = body.idempotency_key if body else None
    new_id = await chats.regenerate_chat(
        client, store, settings, workflow_id, user, idempotency_key=key
    )
    return _started(settings, new_id)


@router.post(
    "/{workflow_id}/edit",
    status_code=202,
    response_model=StartChatResponse,
    responses={409: {"model": ErrorBody, "description": "The chat has not ended."}},
)
async def edit(
    workflow_id: WorkflowId,
    body: EditBody,
    user: CurrentUser,
    client: TemporalDep,
    store: StoreDep,
    limits: LimitsDep,
    settings: SettingsDep,
) -> StartChatResponse:
    """Edit the user's message of this turn and send it again: a new branch of the
    conversation from there. The old branch's later turns are kept."""
    _check_prompt(settings, body.prompt)
    await chats.ensure_owner(client, store, workflow_id, user)
    await chats.check_limits(client, limits, settings, user)
    new_id = await chats.regenerate_chat(
        client, store, settings, workflow_id, user, body.prompt, body.idempotency_key
    )
    return _started(settings, new_id)


@router.post(
    "/{workflow_id}/continue",
    status_code=202,
    response_model=StartChatResponse,
    responses={409: {"model": ErrorBody, "description": "Not stopped nor cut at the limit."}},
)
async def continue_answer(
    workflow_id: WorkflowId,
    user: CurrentUser,
    client: TemporalDep,
    store: StoreDep,
    limits: LimitsDep,
    settings: SettingsDep,
    body: TurnActionBody | None = None,
) -> StartChatResponse:
    """Continue an answer that was stopped or cut at the token limit: a new chat that
    carries it on (its text follows the first one's in the conversation)."""
    await chats.ensure_owner(client, store, workflow_id, user)
    await chats.check_limits(client, limits, settings, user)
    key = body.idempotency_key if body else None
    new_id = await chats.continue_chat(client, store, settings, workflow_id, user, key)
    return _started(settings, new_id)

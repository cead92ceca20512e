"""/v1/responses: OpenAI's Responses API, each response a durable chat.

Create (foreground, `background`, `stream`), retrieve (the object, or its event
stream from `starting_after`), cancel and delete, as the `openai` SDKs call them.
docs/openai-api.md lists what is supported and what is refused.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from api import chats
from api.auth import CurrentUser
from api.schemas import JSON_OR_SSE, V1_ERROR_RESPONSES
from api.v1 import service
from api.v1.objects import deleted_object, response_object
from api.v1.requests import (
    Asked,
    ResponseCreateBody,
    generation_bounds,
    join_system,
    request_hash,
    split_messages,
    unsupported,
)
from common.errors import InvalidRequestError
from common.models import Turn
from storage import ResponseRow

router = APIRouter(prefix="/v1", tags=["openai-compatible"], responses=V1_ERROR_RESPONSES)

ResponseId = Annotated[str, Path(max_length=200)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def v1_of(request: Request) -> service.V1:
    state = request.app.state
    return service.V1(
        client=state.temporal,
        store=state.store,
        responses=state.responses,
        limits=state.limits,
        hub=state.hub,
        settings=state.settings,
    )


def sse(events: AsyncIterator[dict[str, Any]]) -> EventSourceResponse:
    """OpenAI's framing: `event: <type>` and `data: <json>` (no ids; the client resumes
    with `starting_after`, a sequence number)."""

    async def frames() -> AsyncIterator[dict[str, str]]:
        async for event in events:
            yield {"event": event["type"], "data": json.dumps(event, ensure_ascii=False)}

    return EventSourceResponse(frames(), ping=15, headers=SSE_HEADERS)


async def _asked(v1: service.V1, user: str, body: ResponseCreateBody) -> Asked:
    unsupported(body, accepted=set())
    settings = v1.settings
    model = chats.check_model(settings, body.model)
    if body.background and not body.store:
        raise InvalidRequestError(
            "Background mode needs store=true: a background response is retrieved later.",
            param="background",
        )
    system: list[str] = []
    history: list[Turn] = []
    if isinstance(body.input, str):
        prompt = body.input
    else:
        system, history, prompt = split_messages(body.input, "input", (None, "message"))
    if body.previous_response_id:
        history = [
            *await service.previous_turns(v1, user, body.previous_response_id),
            *history,
        ]
    max_tokens, temperature = generation_bounds(
        settings, body.max_output_tokens, body.temperature, "max_output_tokens"
    )
    return Asked(
        prompt=prompt,
        history=history,
        system_prompt=join_system([body.instructions, *system]),
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        params={
            "model": model,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "temperature": temperature,
            "metadata": body.metadata or {},
            "previous_response_id": body.previous_response_id,
            "user": (body.model_extra or {}).get("user"),
        },
    )


@router.post("/responses", response_model=None, responses=JSON_OR_SSE)
async def create_response(
    body: ResponseCreateBody,
    request: Request,
    user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse | EventSourceResponse:
    """Create a response: one ChatStreamingWorkflow. `background`: answer at once
    (queued); `stream`: the event stream; neither: wait for the answer."""
    v1 = v1_of(request)
    row = await service.create(
        v1,
        user,
        await _asked(v1, user, body),
        api="responses",
        background=body.background,
        stored=body.store,
        fingerprint=request_hash(body),
        idempotency_key=idempotency_key,
    )
    headers = {"X-Durable-Chat-Workflow-Id": row.workflow_id}
    if body.stream:
        response = sse(service.response_events(v1, row))
        response.headers.update(headers)
        return response
    if body.background:
        return JSONResponse(response_object(row, "queued"), headers=headers)
    await service.wait_for_end(v1, row)
    return JSONResponse(await service.final_object(v1, row), headers=headers)


@router.get("/responses/{response_id}", response_model=None, responses=JSON_OR_SSE)
async def retrieve_response(
    response_id: ResponseId,
    request: Request,
    user: CurrentUser,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1)] = None,
) -> JSONResponse | EventSourceResponse:
    """The response now; with `stream=true`, its events after `starting_after` (all of
    them without it), then live ones up to the end: exact on any gateway, at any time."""
    v1 = v1_of(request)
    row = await service.load(v1, user, response_id)
    if stream:
        await service.ensure_started(v1, row)
        after = -1 if starting_after is None else starting_after
        return sse(service.response_events(v1, row, after))
    return JSONResponse(await service.current_object(v1, row), headers=_workflow_header(row))


@router.post("/responses/{response_id}/cancel", response_model=None)
async def cancel_response(response_id: ResponseId, request: Request, user: CurrentUser) -> Any:
    """Cancel a response (its workflow); returns it once closed (`cancelled`), or as it
    is when it had already finished."""
    v1 = v1_of(request)
    row = await service.load(v1, user, response_id)
    return JSONResponse(await service.cancel(v1, row), headers=_workflow_header(row))


@router.delete("/responses/{response_id}", response_model=None)
async def delete_response(response_id: ResponseId, request: Request, user: CurrentUser) -> Any:
    """Delete a finished response: its text, events and record (its cost stays counted)."""
    v1 = v1_of(request)
    row = await service.load(v1, user, response_id)
    await service.delete(v1, row)
    return JSONResponse(deleted_object(row.response_id))


def _workflow_header(row: ResponseRow) -> dict[str, str]:
    return {"X-Durable-Chat-Workflow-Id": row.workflow_id}

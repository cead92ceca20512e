"""GET /api/workflows/{id}/events: the chat as a resumable Server-Sent Events stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse

from api import chats
from api.auth import CurrentUser
from api.deps import HubDep, SettingsDep, StoreDep, TemporalDep
from api.events import follow, sse_message
from api.routes.workflows import WorkflowId
from api.schemas import ERROR_RESPONSES
from common.errors import InvalidRequestError

router = APIRouter(prefix="/api/workflows", tags=["workflows"], responses=ERROR_RESPONSES)

_MAX_EVENT_ID = 10**12


def parse_last_event_id(header: str | None, query: str | None) -> int:
    """The seq to resume after: the `Last-Event-ID` header wins over `last_event_id`."""
    raw = header if header not in (None, "") else query
    if raw in (None, ""):
        return 0
    assert raw is not None
    if not raw.isascii() or not raw.isdigit() or int(raw) > _MAX_EVENT_ID:
        raise InvalidRequestError(
            f"Last-Event-ID must be an event id received from this stream (a whole number), "
            f"not {raw[:40]!r}."
        )
    return int(raw)


@router.get(
    "/{workflow_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
)
async def events(
    workflow_id: WorkflowId,
    client: TemporalDep,
    store: StoreDep,
    hub: HubDep,
    settings: SettingsDep,
    user: CurrentUser,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[str | None, Query(max_length=40)] = None,
) -> EventSourceResponse:
    """The chat's events, each with an `id:`: `stage`, live `delta` text (a preview;
    `reset` drops it), checkpointed `chunk`s, and a terminal `completed`, `failed`,
    `cancelled`, `terminated` or `timed_out`. A `reset` with `"scope": "run"` means an
    operator reset the chat in Temporal: drop everything shown, the new run's answer
    follows. Reconnect with `Last-Event-ID` (header or `last_event_id` query) to
    get exactly the events missed, then live ones."""
    after = parse_last_event_id(last_event_id_header, last_event_id)
    await chats.ensure_owner(client, store, workflow_id, user)

    async def stream() -> AsyncIterator[dict[str, Any]]:
        async def check_closed() -> None:
            await chats.reconcile_if_closed(client, settings, workflow_id)

        async def still_runs(ended_run: str) -> bool:
            return await chats.runs_in_temporal(client, workflow_id, other_than=ended_run)

        # sse-starlette ends the stream when the client disconnects (it listens for
        # `http.disconnect`), so there is no per-event check here.
        async for event in follow(hub, store, workflow_id, after, check_closed, still_runs):
            yield sse_message(event)

    return EventSourceResponse(
        stream(), ping=15, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )

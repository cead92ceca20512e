"""Reading a chat's SSE stream (`GET /api/workflows/{id}/events`) with httpx-sse."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import aconnect_sse


@dataclass(frozen=True)
class StreamEvent:
    """One event of a chat's stream, stamped when it arrived."""

    id: int
    event: str
    data: Any
    at: float
    """time.perf_counter() on arrival (for latencies measured by the client)."""
    wall: float
    """time.time() on arrival (to compare with PostgreSQL timestamps)."""

    def as_dict(self) -> dict[str, Any]:
        return {"id": str(self.id), "event": self.event, "data": self.data}


async def stream_events(
    client: httpx.AsyncClient,
    workflow_id: str,
    *,
    last_event_id: str | int | None = None,
    use_query: bool = False,
    headers: dict[str, str] | None = None,
    on_open: Callable[[], None] | None = None,
) -> AsyncGenerator[StreamEvent, None]:
    """The chat's SSE stream (httpx-sse), event by event, until the server ends it.

    Resumes after `last_event_id` (the `Last-Event-ID` header, or the `last_event_id`
    query with `use_query`). A refusal raises `httpx.HTTPStatusError`; `on_open` is
    called once the server has accepted the stream (200), before any event. Use it inside
    `contextlib.aclosing(...)` so that leaving the loop closes the connection at once.
    """
    sent = dict(headers or {})
    params: dict[str, str] = {}
    if last_event_id is not None:
        if use_query:
            params["last_event_id"] = str(last_event_id)
        else:
            sent["Last-Event-ID"] = str(last_event_id)
    url = f"/api/workflows/{workflow_id}/events"
    async with aconnect_sse(client, "GET", url, headers=sent, params=params) as source:
        if source.response.status_code != 200:
            await source.response.aread()
            source.response.raise_for_status()
        if on_open is not None:
            on_open()
        async for sse in source.aiter_sse():
            if sse.event == "message" and not sse.data:
                # httpx-sse turns the server's keep-alive comment into an empty "message"
                # (with the last id); the gateway names every real event.
                continue
            yield StreamEvent(
                id=int(sse.id or 0),
                event=sse.event,
                data=json.loads(sse.data) if sse.data else None,
                at=time.perf_counter(),
                wall=time.time(),
            )


async def read_sse(
    client: httpx.AsyncClient,
    workflow_id: str,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    use_query: bool = False,
    timeout_s: float = 120.0,
) -> list[dict[str, Any]]:
    """Read the chat's SSE stream: every event as {id, event, data}, until the stream ends
    (terminal event) or `stop_after` events were read (then the connection is dropped).

    A stream that has not ended after `timeout_s` (keep-alives keep an idle one open
    for ever) fails with what was read and the chat's status, not a silent hang."""
    events: list[dict[str, Any]] = []
    stream = stream_events(client, workflow_id, last_event_id=last_event_id, use_query=use_query)
    try:
        async with asyncio.timeout(timeout_s), contextlib.aclosing(stream) as received:
            async for event in received:
                events.append(event.as_dict())
                if stop_after is not None and len(events) >= stop_after:
                    break
    except TimeoutError:
        status = await client.get(f"/api/workflows/{workflow_id}/status")
        raise AssertionError(
            f"the stream of {workflow_id} (after {last_event_id}) did not end within "
            f"{timeout_s} s: {len(events)} events read, the last {events[-3:]}; "
            f"status {status.status_code} {status.text[:500]}"
        ) from None
    return events


def preview_text(events: list[dict[str, Any]]) -> str:
    """What a viewer shows from live deltas: a `reset` drops the preview it had, and
    nothing after a `stopping` event is shown."""
    text = ""
    for event in events:
        if event["event"] == "stopping":
            break
        if event["event"] == "reset":
            text = ""
        elif event["event"] == "delta":
            assert event["data"]["offset"] == len(text), "a delta out of place"
            text += event["data"]["text"]
    return text


def checkpointed_text(events: list[dict[str, Any]]) -> str:
    chunks = {e["data"]["index"]: e["data"]["text"] for e in events if e["event"] == "chunk"}
    assert sorted(chunks) == list(range(len(chunks)))
    return "".join(chunks[i] for i in range(len(chunks)))

"""The chaos suite's client: starts chats through the gateway and follows each one over
SSE, reconnecting with `Last-Event-ID` whenever the connection drops (as a browser's
EventSource does, or a person pressing F5).

A follower keeps every event it received, with the wall-clock time it arrived, so the
harness can check afterwards that the stream delivered each event of the chat's log
exactly once and measure when progress resumed after a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from common.contract import TERMINAL_EVENTS
from testing.chats import FIRST_BACKOFF_S, MAX_BACKOFF_S
from testing.sse import StreamEvent, stream_events


@dataclass(frozen=True)
class Received:
    """One SSE event as the client got it."""

    seq: int
    type: str
    data: Any
    at: float  # time.time() when it arrived


@dataclass
class ChatFollower:
    """Follows one chat's event stream to its terminal event, whatever happens to the
    connection in between."""

    http: httpx.AsyncClient
    workflow_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    first_backoff_s: float = FIRST_BACKOFF_S
    max_backoff_s: float = MAX_BACKOFF_S
    events: list[Received] = field(default_factory=list)
    connects: int = 0
    """Connections opened (1 when nothing went wrong)."""
    refused: int = 0
    """Connection attempts that failed or got a non-200 answer."""
    drops: int = 0
    """Streams that ended or broke before the terminal event."""
    reconnected_at: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    preview_chars: int = 0
    chunk_indices: set[int] = field(default_factory=set)
    total_chunks: int | None = None
    stage: str = "queued"
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _connection: asyncio.Task[None] | None = None
    _pause_s: float | None = None

    @property
    def last_id(self) -> int:
        return self.events[-1].seq if self.events else 0

    @property
    def terminal(self) -> str | None:
        last = self.events[-1] if self.events else None
        return last.type if last is not None and last.type in TERMINAL_EVENTS else None

    async def run(self) -> None:
        """Read, reconnect, read… until the terminal event (cancel the task to give up)."""
        backoff = self.first_backoff_s
        while not self.done.is_set():
            received_before = len(self.events)
            self._connection = asyncio.create_task(self._read_once())
            await asyncio.wait({self._connection})
            connection, self._connection = self._connection, None
            if self.done.is_set():
                break
            if len(self.events) > received_before:
                backoff = self.first_backoff_s  # that connection worked: retry promptly
            if connection.cancelled():
                pause = self._pause_s if self._pause_s is not None else backoff
                self._pause_s = None
                self.drops += 1
                await asyncio.sleep(pause)
            else:
                error = connection.exception()
                if error is not None:
                    self.errors.append(f"{type(error).__name__}: {error}"[:200])
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
            self.reconnected_at.append(time.time())

    async def follow_again(self) -> None:
        """Follow the stream again from the last event received (`Last-Event-ID`) to the
        next terminal event: a viewer coming back to a chat that ended and was then reset
        by an operator (the new run's events follow its earlier end)."""
        self.done.clear()
        await self.run()

    def drop(self, pause_s: float) -> bool:
        """Close the connection now (a page reload) and reconnect after `pause_s`.
        False when there is nothing to drop (finished, or between connections)."""
        if self.done.is_set() or self._connection is None or self._connection.done():
            return False
        self._pause_s = pause_s
        self._connection.cancel()
        return True

    async def _read_once(self) -> None:
        connected = False

        def opened() -> None:
            nonlocal connected
            connected = True
            self.connects += 1

        stream = stream_events(
            self.http,
            self.workflow_id,
            last_event_id=self.last_id if self.events else None,
            headers=dict(self.headers),
            on_open=opened,
        )
        try:
            async with contextlib.aclosing(stream) as received:
                async for event in received:
                    self._on_event(event)
                    if self.done.is_set():
                        return
        except (httpx.TransportError, httpx.StreamError, httpx.HTTPStatusError):
            if connected:
                self.drops += 1
            else:
                self.refused += 1
            return
        self.drops += 1  # the server ended the stream without a terminal event

    def _on_event(self, received: StreamEvent) -> None:
        event = Received(seq=received.id, type=received.event, data=received.data, at=received.wall)
        self.events.append(event)
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == "reset":
            self.preview_chars = 0
        elif event.type == "delta":
            self.preview_chars = int(data["offset"]) + len(data["text"])
        elif event.type == "chunk":
            self.chunk_indices.add(int(data["index"]))
            self.total_chunks = int(data["total"])
        elif event.type == "stage":
            self.stage = str(data["stage"])
            if data.get("total_chunks") is not None:
                self.total_chunks = int(data["total_chunks"])
        if event.type in TERMINAL_EVENTS:
            self.done.set()


async def get_status(
    http: httpx.AsyncClient, workflow_id: str, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of GET /status; (0, {}) when the gateway is unreachable."""
    try:
        response = await http.get(
            f"/api/workflows/{workflow_id}/status", headers=headers, timeout=10
        )
    except httpx.TransportError:
        return 0, {}
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, body if isinstance(body, dict) else {}

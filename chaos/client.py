"""The chaos suite's client: starts chats through the gateway and follows each one over
SSE, reconnecting with `Last-Event-ID` whenever the connection drops (as a browser's
EventSource does, or a person pressing F5).

A follower keeps every event it received, with the wall-clock time it arrived, so the
harness can check afterwards that the stream delivered each event of the chat's log
exactly once and measure when progress resumed after a fault.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

# Every way a chat's stream ends: its own ends, and those an operator or a timeout gives
# it (`terminated`, `timed_out`, written by the reconciler; api/events.py).
TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "terminated", "timed_out"})
# How long a client waits before trying again after a dropped stream or an error answer
# (503 while a dependency is down, connection refused while the gateway restarts): from
# FIRST_BACKOFF_S, doubling up to MAX_BACKOFF_S while attempts keep failing, as the UI's
# client does (ui/gateway_client.py, there 0.5 s to 5 s).
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0


class StartFailedError(Exception):
    """The gateway refused to start a chat with a non-retryable answer."""


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
        headers = dict(self.headers)
        if self.events:
            headers["Last-Event-ID"] = str(self.last_id)
        url = f"/api/workflows/{self.workflow_id}/events"
        connected = False
        try:
            async with self.http.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    self.refused += 1
                    return
                connected = True
                self.connects += 1
                await self._consume(response)
        except (httpx.TransportError, httpx.StreamError):
            if connected:
                self.drops += 1
            else:
                self.refused += 1
            return
        if not self.done.is_set():
            self.drops += 1  # the server ended the stream without a terminal event

    async def _consume(self, response: httpx.Response) -> None:
        """Parse the stream until its terminal event (leaving the `async with` of the
        caller then closes the connection)."""
        current: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "event" in current and "id" in current:
                    self._on_event(current)
                    if self.done.is_set():
                        return
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                current[name] = value[1:] if value.startswith(" ") else value

    def _on_event(self, raw: dict[str, str]) -> None:
        event = Received(
            seq=int(raw["id"]),
            type=raw["event"],
            data=json.loads(raw.get("data", "null")),
            at=time.time(),
        )
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


async def start_chat(
    http: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    deadline_s: float = 120.0,
) -> tuple[str, int]:
    """POST /api/workflows/start, retrying connection errors, 503 and 429 until
    `deadline_s` (send an `idempotency_key` so that a retry never starts a second chat).
    Returns (workflow id, attempts)."""
    give_up = time.monotonic() + deadline_s
    attempts = 0
    backoff = FIRST_BACKOFF_S
    while True:
        attempts += 1
        try:
            response = await http.post("/api/workflows/start", json=body, headers=headers)
        except httpx.TransportError as err:
            if time.monotonic() > give_up:
                raise StartFailedError(f"gateway unreachable: {err}") from err
        else:
            if response.status_code == 202:
                return str(response.json()["workflow_id"]), attempts
            if response.status_code not in (429, 502, 503, 504) or time.monotonic() > give_up:
                raise StartFailedError(f"start answered {response.status_code}: {response.text}")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_S)


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


async def read_chunks_by_cursor(
    http: httpx.AsyncClient, workflow_id: str, headers: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Follow GET /chunks?from_id=N from 0 to the end, as a polling client would."""
    chunks: list[dict[str, Any]] = []
    cursor = 0
    while True:
        response = await http.get(
            f"/api/workflows/{workflow_id}/chunks", params={"from_id": cursor}, headers=headers
        )
        response.raise_for_status()
        page = response.json()
        chunks.extend(page["chunks"])
        if not page["chunks"]:
            return chunks
        cursor = int(page["next_from_id"])

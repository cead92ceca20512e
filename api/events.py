"""Live chat events for SSE streams, woken by PostgreSQL LISTEN/NOTIFY.

Each gateway process keeps one LISTEN connection on `storage.EVENTS_CHANNEL`. A
stream waiting for a chat registers a wake-up; a NOTIFY for that chat (sent at the
commit of every appended event, by whichever worker appended it) wakes it, and it
reads the new events from the log by sequence number. Nothing is handed over in
memory between worker and gateway, so any number of gateways can serve any chat,
and a stream resumed on another gateway with `Last-Event-ID` continues exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import structlog

from common.contract import TERMINAL_EVENTS
from storage import EVENTS_CHANNEL, ChatEvent, ChatStore

log = structlog.get_logger(__name__)

# A stream re-reads the log at least this often even without a NOTIFY (a notification
# lost while the LISTEN connection was being re-established must not stall it).
FALLBACK_POLL_S = 2.0
# A stream that has received nothing for this long asks Temporal whether the chat
# still runs (an operator may have terminated it: nothing would ever be written).
CLOSE_CHECK_S = 2.0

CloseCheck = Callable[[], Awaitable[None]]
RunsCheck = Callable[[str], Awaitable[bool]]
"""Whether Temporal runs the chat in a run other than the given one (the run that
wrote its end): an operator reset it, and the new run's events will follow."""


class ChatEventHub:
    """Wakes the streams of a chat when its event log grows."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.listening = False

    @contextlib.contextmanager
    def subscribe(self, workflow_id: str) -> Iterator[asyncio.Event]:
        wake = asyncio.Event()
        self._waiters[workflow_id].add(wake)
        try:
            yield wake
        finally:
            waiters = self._waiters.get(workflow_id)
            if waiters is not None:
                waiters.discard(wake)
                if not waiters:
                    del self._waiters[workflow_id]

    @property
    def open_streams(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def run(self) -> None:
        """Keep a LISTEN connection open for the life of the gateway, reconnecting."""
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn)
            except (OSError, asyncpg.PostgresError, TimeoutError) as err:
                log.warning("event listener cannot connect; retrying", error=str(err))
                await asyncio.sleep(1.0)
                continue
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(EVENTS_CHANNEL, self._on_notify)
                self.listening = True
                self._wake_all()  # events may have been appended while we were away
                await lost.wait()
            except (OSError, asyncpg.PostgresError) as err:
                log.warning("event listener lost", error=str(err))
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    await conn.close()
            self._wake_all()
            await asyncio.sleep(0.5)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        for wake in self._waiters.get(payload, ()):
            wake.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for wake in waiters:
                wake.set()


async def follow(
    hub: ChatEventHub,
    store: ChatStore,
    workflow_id: str,
    after_seq: int,
    check_closed: CloseCheck | None = None,
    still_runs: RunsCheck | None = None,
) -> AsyncIterator[ChatEvent]:
    """Yield the chat's events with seq > `after_seq`, then live ones, up to a terminal one.

    Each event is yielded once, in seq order; `wake` is cleared before each read, so a
    NOTIFY that arrives during the read is not lost. After `CLOSE_CHECK_S` without an
    event, and as often again, `check_closed` runs: it has the record of a chat whose
    workflow closed without writing its end repaired, which appends the terminal event.
    A stream resumed after the terminal event ends at once, unless `still_runs` says
    Temporal runs the chat in another run (an operator reset it: the new run's events
    follow); the run that wrote the end may still be closing (its last activity beside
    the `completed` record), which is not a reason to wait. A stream waiting for such a
    new run ends if, at a close check, it no longer runs.
    """
    last_event_at = time.monotonic()
    first_read = True
    ended_run: str | None = None  # resumed after the end of this run, waiting for the next
    with hub.subscribe(workflow_id) as wake:
        while True:
            wake.clear()
            events = await store.events_after(workflow_id, after_seq)
            for event in events:
                ended_run = None
                yield event
                after_seq = event.seq
                last_event_at = time.monotonic()
                if event.type in TERMINAL_EVENTS:
                    return
            if not events and first_read:
                ended_run = await _finished_run(store, workflow_id, after_seq)
                if ended_run is not None and not (
                    still_runs is not None and await still_runs(ended_run)
                ):
                    return  # resumed after the terminal event: nothing more will come
            first_read = False
            if wake.is_set():
                continue  # appended while we read: read again at once
            idle = time.monotonic() - last_event_at
            if idle >= CLOSE_CHECK_S:
                last_event_at = time.monotonic()
                if ended_run is not None and still_runs is not None:
                    if not await still_runs(ended_run):
                        return  # the run it waited for closed (or never came)
                elif check_closed is not None:
                    await check_closed()
            # Woken by the next NOTIFY; without one, read again every FALLBACK_POLL_S
            # (a notification lost while the LISTEN connection was re-established).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=FALLBACK_POLL_S)


async def _finished_run(store: ChatStore, workflow_id: str, after_seq: int) -> str | None:
    """The run that ended the chat, if its end is at or before `after_seq`."""
    row = await store.get_generation(workflow_id)
    if row is None or not row.stage.is_final or after_seq < row.last_event_seq:
        return None
    return row.run_id


def sse_message(event: ChatEvent) -> dict[str, Any]:
    """The sse-starlette form of an event: `id` is the per-chat seq (for Last-Event-ID)."""
    return {"id": str(event.seq), "event": event.type, "data": json.dumps(event.data)}

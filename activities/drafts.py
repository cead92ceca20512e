"""Live preview of an answer while the LLM streams it: `delta` events in the chat's log.

The preview is best effort and never the durable record (that is the chunks written
by save_chunk): a failure to write a delta is logged and generation goes on. Deltas
are batched (the first one at once, then every `FLUSH_INTERVAL_S`) so the log gets
a handful of rows per second per chat, not one per token, and nothing is added to the
workflow history.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import structlog

from storage import ChatStore

log = structlog.get_logger(__name__)

FLUSH_INTERVAL_S = 0.05


class DraftPublisher:
    """Appends one attempt's streamed text to the chat's event log, in batches."""

    def __init__(self, store: ChatStore, workflow_id: str, attempt: int) -> None:
        self._store = store
        self._workflow_id = workflow_id
        self._attempt = attempt
        self._pending: list[str] = []
        self._published_chars = 0
        self._last_flush = 0.0
        self._broken = False

    @property
    def chars(self) -> int:
        """Characters received so far in this attempt (published or pending)."""
        return self._published_chars + sum(len(p) for p in self._pending)

    async def restart(self, reason: str) -> None:
        """Tell viewers to drop the preview they have: this attempt starts from scratch."""
        await self._append("reset", {"attempt": self._attempt, "reason": reason})

    async def add(self, delta: str) -> None:
        self._pending.append(delta)
        now = time.monotonic()
        if self._published_chars == 0 or now - self._last_flush >= FLUSH_INTERVAL_S:
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        offset = self._published_chars
        self._published_chars += len(text)
        self._last_flush = time.monotonic()
        await self._append("delta", {"attempt": self._attempt, "offset": offset, "text": text})

    async def _append(self, type_: str, data: dict[str, Any]) -> None:
        if self._broken:
            return
        try:
            await self._store.append_event(self._workflow_id, type_, data)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, LookupError) as err:
            # The preview stops; the answer itself is unaffected.
            self._broken = True
            log.warning("live preview unavailable for this attempt", error=str(err))

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

# Ten rows a second per streaming chat: each row is an INSERT, a NOTIFY, a read by the
# gateway and an SSE frame per viewer; at 50 ms, 100 chats streaming at once spent twice
# that on it (bench.load: 18 -> 15.5 s to all-durable), for a cadence no reader sees.
FLUSH_INTERVAL_S = 0.1


class DraftPublisher:
    """Appends one attempt's streamed text to the chat's event log, in batches."""

    def __init__(
        self,
        store: ChatStore,
        workflow_id: str,
        attempt: int,
        published_chars: int = 0,
        run_id: str = "",
    ) -> None:
        self._store = store
        self.workflow_id = workflow_id
        self._run_id = run_id
        self._attempt = attempt
        self._pending: list[str] = []
        self._pending_seq: int | None = None
        self._published_chars = published_chars
        self._last_flush = 0.0
        self._broken = False
        self.response_id: str | None = None
        """The provider's id of a resumable (background) generation, once known."""
        self.published_seq: int | None = None
        """Provider sequence number of the last delta viewers have (resume point)."""

    @property
    def published_chars(self) -> int:
        return self._published_chars

    def continue_from(self, response_id: str, seq: int | None, published_chars: int) -> None:
        """Continue the preview a previous attempt published (resumable generation)."""
        self.response_id = response_id
        self.published_seq = seq
        self._published_chars = published_chars

    def discard_pending(self) -> None:
        """Forget deltas received but not yet published: the provider sends them again
        when the stream is re-attached after `published_seq`."""
        self._pending.clear()
        self._pending_seq = None

    async def start_over(self, reason: str) -> None:
        """Drop the preview (a `reset` for viewers) and forget the generation."""
        self._pending.clear()
        self.response_id = None
        self.published_seq = None
        self._published_chars = 0
        await self.restart(reason)

    @property
    def chars(self) -> int:
        """Characters received so far in this attempt (published or pending)."""
        return self._published_chars + sum(len(p) for p in self._pending)

    async def restart(self, reason: str) -> None:
        """Tell viewers to drop the preview they have: this attempt starts from scratch."""
        await self._append("reset", {"attempt": self._attempt, "reason": reason})

    async def restart_if_shown(self, reason: str) -> None:
        """`restart`, when viewers have text to drop: an attempt after one that showed
        nothing (a refused request, a provider that was down) starts quietly."""
        try:
            last = await self._store.last_preview_event(self.workflow_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            log.warning("cannot read the preview position; resetting it", error=str(err))
            shown = True
        else:
            shown = (
                last is not None
                and last.type == "delta"
                and int(last.data.get("offset", 0)) + len(str(last.data.get("text", ""))) > 0
            )
        if shown:
            await self.restart(reason)

    async def add(self, delta: str, provider_seq: int | None = None) -> None:
        self._pending.append(delta)
        self._pending_seq = provider_seq
        now = time.monotonic()
        if self._published_chars == 0 or now - self._last_flush >= FLUSH_INTERVAL_S:
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        seq = self._pending_seq
        self._pending.clear()
        self._last_flush = time.monotonic()
        data: dict[str, Any] = {"attempt": self._attempt, "offset": self._published_chars}
        data["text"] = text
        if self.response_id is not None and seq is not None:
            data.update(response_id=self.response_id, seq=seq)
        if await self._append("delta", data):
            self._published_chars += len(text)
            self.published_seq = seq

    async def _append(self, type_: str, data: dict[str, Any]) -> bool:
        if self._broken:
            return False
        try:
            await self._store.append_event(self.workflow_id, type_, data, self._run_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, LookupError) as err:
            # The preview stops; the answer itself is unaffected.
            self._broken = True
            log.warning("live preview unavailable for this attempt", error=str(err))
            return False
        return True
